"""Command lines a user runs from a checkout (predict.py and the console scripts); these may
import any layer."""
