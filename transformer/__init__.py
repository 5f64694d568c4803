"""Character-level language models built from tinygraph ops, the command lines that
train, test and sample them, and `load()`, which makes a trained run usable from Python:

    import transformer
    m = transformer.load("runs/baby-<date>-<time>")
    print(m.generate("ROMEO:", max_new_tokens=100))

    settings.py     every setting once: its type, default, range and help
    options.py      how a setting or a layer's argument is typed and checked
    config.py       TOML configs: [model], [train] and the [[layers]] stack, checked
    layers/         the layers, each one class that declares its options
    model.py        LanguageModel: the stack a config lists
    generation.py   sampling the next token, and the loop that generates (cached or not)
    api.py          load(): a trained run, to generate and score text
    data.py         the corpus, the tokenizers, the splits and the batches
    trainer.py      setting a run up: new, fine-tuned from another, or resumed
    loop.py         the training loop, top to bottom
    rundir.py       the run directory: create, lock, save, restore, read back
    report.py       what a run tells: the console, metrics, samples, the plots
    checkpoint.py   atomic writes, safetensors
    distributed.py  under torchrun
    train.py, test.py, sample.py, cli.py   the command lines
"""

from .api import Score, TrainedModel, load
from .errors import UserError

__all__ = ["Score", "TrainedModel", "UserError", "load"]
