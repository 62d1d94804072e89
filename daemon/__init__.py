"""artfsd: the artfs mount daemon (pyfuse3 + trio). Imports artfs, never the other way round."""
