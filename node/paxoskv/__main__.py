from paxoskv.cli import main

raise SystemExit(main())
