"""Applications over the library: the command line, the HTTP server and the jobs (main job, study)."""
