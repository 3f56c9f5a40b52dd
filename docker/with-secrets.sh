#!/bin/sh
# Entry point of the cxrlab image: puts the PostgreSQL password of the compose secret into
# PGPASSWORD, which libpq (psycopg2, under MLflow and Optuna) reads, so that no URL, no command
# line and no `docker inspect` output carries it; then runs the command.
set -eu
if [ -r /run/secrets/postgres_password ]; then
  PGPASSWORD="$(cat /run/secrets/postgres_password)"
  export PGPASSWORD
fi
exec "$@"
