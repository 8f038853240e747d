from nnlint.cli import main

raise SystemExit(main())
