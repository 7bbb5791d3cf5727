"""The command line's argument parser: a mistake is one line and exit status 2, as the contract says."""

from __future__ import annotations

import argparse
import sys

from pipeline.errors import EXIT_USAGE


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
