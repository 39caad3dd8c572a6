#!/bin/sh
# /usr/local/bin/dbkeep in the image, its entrypoint. It runs the CLI, after one thing a container needs: a config
# file mounted into /config is found without -c or $DBKEEP_CONFIG, under dbkeep's name (/config/dbkeep.yaml) or
# seed 000's (/config/config.yaml). With neither file there, nothing is set, so that sidecar mode (environment
# variables alone) still applies; -c, $DBKEEP_CONFIG and $DBBACKUP_CONFIG always win.
if [ -z "${DBKEEP_CONFIG:-}" ] && [ -z "${DBBACKUP_CONFIG:-}" ]; then
  for f in /config/dbkeep.yaml /config/config.yaml; do
    if [ -f "$f" ]; then
      DBKEEP_CONFIG=$f
      export DBKEEP_CONFIG
      break
    fi
  done
fi
exec node /opt/dbkeep/dist/bin/dbkeep.js "$@"
