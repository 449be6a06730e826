#!/bin/sh
# CI only: first start creates the cluster (login POSTGRES_USER with the
# password from POSTGRES_PASSWORD_FILE, database POSTGRES_DB), then runs the
# server in the foreground. Like the official image, the init server listens on
# the Unix socket only, so a TCP pg_isready turns healthy only for the real one.
set -eu
: "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD_FILE:?}"
db=${POSTGRES_DB:-$POSTGRES_USER}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb --username="$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 -D "$PGDATA" >/dev/null
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql -v ON_ERROR_STOP=1 -q --username "$POSTGRES_USER" --dbname postgres \
      -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\""
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  echo "postgres-entrypoint: cluster initialised (login $POSTGRES_USER, database $db)"
fi
exec postgres -D "$PGDATA"
