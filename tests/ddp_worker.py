"""Run by the distributed tests under torchrun: trains like `python -m transformer.train`,
then saves this rank's weights to PREFIX.rankN.safetensors so that the test can compare ranks."""

import sys

from transformer import checkpoint as ckpt
from transformer import distributed, train

if __name__ == "__main__":
    prefix, argv = sys.argv[1], sys.argv[2:]
    args = train.build_parser().parse_args(argv)
    job, device = distributed.start(args.dist_backend, args.device)
    trainer = train.Trainer(args, job, device)
    code = trainer.run()
    ckpt.save_tensors(ckpt.Path(f"{prefix}.rank{job.rank}.safetensors"), trainer.model.state_dict(), {"code": code})
    job.end()
    sys.exit(code)
