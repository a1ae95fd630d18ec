"""``accelerate launch -m latentzoo.training CONFIG [key=value ...]``: train one config, on one process or many."""

from .cli import main

if __name__ == "__main__":
    main(["train", *__import__("sys").argv[1:]])
