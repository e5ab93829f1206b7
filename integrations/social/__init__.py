"""Comment automation: personas answer comments on Instagram, Facebook, X and YouTube.

Platform modules (meta.py, x.py, youtube.py) implement the bases of
base.py; the pipeline and its installation land in service.py
(docs/integrations.md).
"""
