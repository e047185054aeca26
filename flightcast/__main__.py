from flightcast.cli import main

raise SystemExit(main())
