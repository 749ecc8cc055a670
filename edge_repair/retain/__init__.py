"""The retain buffer: samples of what an edit must not change, kept encrypted at rest."""
