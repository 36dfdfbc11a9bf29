"""``python -m framesink`` runs the CLI."""

from .cli import main

raise SystemExit(main())
