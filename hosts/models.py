# Domain models arrive with their issues (see docs/roadmap.md).
