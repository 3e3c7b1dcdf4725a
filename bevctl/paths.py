"""Where the project lives inside its container (docker/Dockerfile's WORKDIR; keep the two equal). Stdlib only:
the phase schema, the Docker package and doctor all read it from here."""

WORKDIR = "/workspace/bevfusion"
RUNS_MOUNT = f"{WORKDIR}/runs"
