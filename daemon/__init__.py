"""artfsd: the artfs mount daemon (pyfuse3 + trio). Imports artfs, never the other way round.

    main.py       the process: options, daemonizing, readiness (pipe, systemd), signals, cache bound
    fs.py         the pyfuse3 Operations: dispatch by inode, attributes, reads, xattrs, EROFS
    namespace.py  root/project/artifact levels, alias symlinks, refresh from the store, inode table
    tree.py       the compact, immutable index of one version's directory tree
    errors.py     artfs errors -> errno, in one place
    testing.py    MountProcess: a real mount in a child process for tests
"""
