"""artfsd: the artfs mount daemon (pyfuse3 + trio). Imports artfs, never the other way round.

    main.py       the process: options, daemonizing, readiness (pipe, systemd), signals, cache bound
    fs.py         the pyfuse3 Operations: a router (Operations.route) over three handlers
    handler.py    their one protocol (Handler: read-only answers by default) and what they share
    listing.py    handler: the root, projects, artifacts, alias symlinks (mkdir, ln -s, mv, rm)
    versions.py   handler: vN/ and its files, read-only; openfiles.py  their open, read and release
                  (one lazy-reader handle per open file; opens of complete blobs on the event loop)
    draftfs.py    handler: draft/, an adapter over drafts.py
    attrs.py      every user.artfs.* attribute name and how its value is spelt
    listings.py   Listings: root/project/artifact levels, alias symlinks, refresh from the store, inode table
    drafts.py     the writable draft/ of every artifact (DraftSpace) and its namespace; the draft
                  itself is artfs._draft. The parts it holds: draft_slots.py (slots, inodes,
                  threads, attributes), draft_files.py (open files, reads, writes),
                  draft_commits.py (commits through user.artfs.commit and at unmount,
                  user.artfs.* attributes)
    tree.py       the compact, immutable index of one version's directory tree (LazyTree: a
                  sharded version's, read one directory's piece at a time)
    errors.py     artfs errors -> errno, in one place
    kernel.py     passthrough and cached listings: what the kernel agreed to
    prefetch.py   when to prefetch a directory's small files; waiting on trio for a fetch in flight
    lineage.py    which run opened which version, wrote which draft
    testing.py    MountProcess: a real mount in a child process for tests
"""
