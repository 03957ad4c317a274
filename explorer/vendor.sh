#!/usr/bin/env bash
# Fetch the explorer's third-party bundles again from the npm registry, at the pinned versions.
# The files are committed: chatql never fetches anything at run time. Only the trailing
# sourceMappingURL comments are removed (the maps are not shipped); licence headers stay.
set -euo pipefail
cd "$(dirname "$0")/static/vendor"
GRAPHIQL=4.1.2 REACT=18.3.1 GRAPHQL_WS=6.0.8
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "graphiql@$GRAPHIQL" "react@$REACT" "react-dom@$REACT" \
  "graphql-ws@$GRAPHQL_WS" >/dev/null && for t in *.tgz; do mkdir "${t%.tgz}" && tar xzf "$t" -C "${t%.tgz}"; done)
strip() { sed '/sourceMappingURL=/d' "$1"; }
strip "$work/graphiql-$GRAPHIQL/package/graphiql.min.js" > "graphiql-$GRAPHIQL.min.js"
strip "$work/graphiql-$GRAPHIQL/package/graphiql.min.css" > "graphiql-$GRAPHIQL.min.css"
cp "$work/react-$REACT/package/umd/react.production.min.js" "react-$REACT.production.min.js"
cp "$work/react-dom-$REACT/package/umd/react-dom.production.min.js" "react-dom-$REACT.production.min.js"
strip "$work/graphql-ws-$GRAPHQL_WS/package/umd/graphql-ws.min.js" > "graphql-ws-$GRAPHQL_WS.min.js"
cp "$work/graphiql-$GRAPHIQL/package/LICENSE" graphiql.LICENSE.txt
cp "$work/react-$REACT/package/LICENSE" react.LICENSE.txt
cp "$work/react-dom-$REACT/package/LICENSE" react-dom.LICENSE.txt
cp "$work/graphql-ws-$GRAPHQL_WS/package/LICENSE.md" graphql-ws.LICENSE.txt
sha256sum -- *.js *.css > SHA256SUMS
