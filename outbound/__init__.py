"""Requests we send out of the network: webhook replays to partner endpoints.

``guard`` builds the only HTTP client allowed to do that; ``signing`` signs and
sends one delivery with it.
"""
