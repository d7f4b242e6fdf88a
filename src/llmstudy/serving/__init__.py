"""Serving machinery shared by every serving chapter: managed servers, their logs, load generation, resumable sweeps."""
