"""The HTTP edge of the server: what the app does to a request before and after the schema.

`view` (the GraphQL view: CSRF, persisted queries, status codes, media types, masking),
`sse` (GraphQL over Server-Sent Events), `body` (the request body limit), `persisted` (the
persisted query store), `responses` (error bodies and media types), `http_protocol`
(uvicorn's HTTP protocol with a request-head timeout). Like `app/`, it reads request headers;
the schema never does.
"""
