#!/bin/bash
# ebroker session 7c3e2a10-5b4d-4e6f-8a9b-0c1d2e3f4a5b on platform hpc
# booked window: 2030-03-17T17:46:40 .. 2030-03-17T19:46:40
set -u
_ebroker_cleanup() { :; }
_ebroker_term() {
  trap - TERM INT
  kill -TERM "$_ebroker_child" 2>/dev/null
  _ebroker_cleanup
  wait "$_ebroker_child" 2>/dev/null
  exit 143
}
apptainer exec --env 'GREETING=it'"'"'s me' --env THREADS=4 --bind /srv/ebroker/sessions/7c3e2a10-5b4d-4e6f-8a9b-0c1d2e3f4a5b/storage/7c3e2a10-0000-4000-8000-000000000001:/results:rw --bind /srv/ebroker/sessions/7c3e2a10-5b4d-4e6f-8a9b-0c1d2e3f4a5b/data/7c3e2a10-0000-4000-8000-000000000002:/input:ro docker://docker.io/library/python:3.12 -c 'print('"'"'hello, world'"'"'); import sys; sys.exit(0)' &
_ebroker_child=$!
trap _ebroker_term TERM INT
wait "$_ebroker_child"
exit $?
