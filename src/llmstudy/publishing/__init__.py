"""Turning records into the published book: Sphinx extension, versioned site, claims, reader's check, forks."""
