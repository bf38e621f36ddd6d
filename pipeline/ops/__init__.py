"""Operating the pipeline: the CLI, the service functions behind it, doctor, demo, local broker, workloads."""
