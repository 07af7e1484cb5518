"""``python -m hf_compress`` (and ``accelerate launch -m hf_compress``): the command line."""

from .cli import main

if __name__ == "__main__":
    main()
