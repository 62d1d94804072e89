"""artfsd: the artfs mount daemon (pyfuse3 + trio). Imports artfs, never the other way round.

    main.py       the process: options, daemonizing, readiness (pipe, systemd), signals, cache bound
    fs.py         the pyfuse3 Operations: dispatch by inode, attributes, reads, xattrs, writes
    namespace.py  root/project/artifact levels, alias symlinks, refresh from the store, inode table
    drafts.py     the writable draft/ of every artifact (DraftSpace) and its namespace; the draft
                  itself is artfs._draft. Its layers: draft_slots.py (slots, inodes, threads,
                  attributes), draft_files.py (open files, reads, writes), draft_commits.py
                  (commits through user.artfs.commit and at unmount, user.artfs.* attributes)
    tree.py       the compact, immutable index of one version's directory tree
    errors.py     artfs errors -> errno, in one place
    testing.py    MountProcess: a real mount in a child process for tests
"""
