"""Run by the distributed tests under torchrun: trains like `python -m transformer.train`,
then saves this rank's weights to PREFIX.rankN.safetensors so that the test can compare ranks."""

import sys

from transformer import checkpoint as ckpt
from transformer import distributed, loop, train
from transformer.trainer import Trainer, plan

if __name__ == "__main__":
    prefix, argv = sys.argv[1], sys.argv[2:]
    what = plan(*train.read_flags(train.build_parser().parse_args(argv)))
    job, device = distributed.start(what.run.dist_backend, what.run.device)
    trainer = Trainer(what, job, device)
    code = loop.train(trainer)
    ckpt.save_tensors(ckpt.Path(f"{prefix}.rank{job.rank}.safetensors"), trainer.model.state_dict(), {"code": code})
    job.end()
    sys.exit(code)
