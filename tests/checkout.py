"""The checkout the tests run from: its reviewed files are what the tests check."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
