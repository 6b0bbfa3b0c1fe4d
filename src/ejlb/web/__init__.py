"""ejlb's web dashboard and REST API (`ejlb serve --http HOST:PORT`): see docs/rest.md."""
