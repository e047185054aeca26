#!/bin/sh
# Regenerate flight_server/flightsql_pb2.py from proto/FlightSql.proto with the generator pinned in
# constraints.txt (grpcio-tools, which bundles protoc). The generator is installed into a throwaway venv:
# it is not a dependency of flightcast, only the protobuf runtime is. Never edit the output by hand.
#
# Run: scripts/gen_flightsql.sh   (needs python3 and access to PyPI)
set -eu
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt grpcio-tools
"$work/venv/bin/python" -m grpc_tools.protoc --proto_path=proto --python_out="$work" proto/FlightSql.proto
mv "$work/FlightSql_pb2.py" flight_server/flightsql_pb2.py
echo "wrote flight_server/flightsql_pb2.py ($("$work/venv/bin/python" -m grpc_tools.protoc --version))"
