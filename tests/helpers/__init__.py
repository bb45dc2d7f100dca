"""Helpers the tests import: servers, AWS emulation, IAM evaluation, checkpoints and sample data."""
