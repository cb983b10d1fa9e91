"""``python -m reprdiag`` is the same CLI as ``reprdiag``."""

from reprdiag.cli import main

if __name__ == "__main__":
    main()
