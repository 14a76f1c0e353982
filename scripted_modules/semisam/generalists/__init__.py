"""Promptable 2D generalists (SAM family) behind one protocol and a registry of build functions."""
