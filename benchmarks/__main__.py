"""``python -m benchmarks`` runs the benchmark."""

from .runner import main

raise SystemExit(main())
