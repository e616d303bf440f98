"""The service side of foveal: the ingest queue (embedded SQLite or Celery on Redis), jobs and their records."""
