"""Integration Hub: exports volunteer-app data to accounting systems and Bufdir."""

__version__ = "0.1.0"
