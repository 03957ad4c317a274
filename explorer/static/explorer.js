/* chatql's explorer: GraphiQL with its HTTP and WebSocket transports, all served locally.
 *
 * Queries and mutations go over HTTP POST to /graphql with the header editor's headers.
 * Subscriptions go over graphql-ws (protocol graphql-transport-ws) to the same path; the
 * Authorization header from the header editor travels in the connection_init payload, and a
 * new connection is opened whenever that header changes.
 */
(function () {
  "use strict";

  var DEFAULT_QUERY = [
    "# Welcome to chatql. Everything on this page is served by chatql itself.",
    "#",
    "# 1. Run SignUp (or LogIn) with the play button and copy the token from the result.",
    "# 2. Open Headers below and paste it: {\"Authorization\": \"Bearer <token>\"}",
    "# 3. Run Me, StartConversation and Send; subscribe with MessageAdded in a second tab",
    "#    to watch new messages arrive over the WebSocket.",
    "",
    "mutation SignUp {",
    "  signUp(input: {username: \"ada\", email: \"ada@example.com\", password: \"correct horse\"}) {",
    "    token",
    "    user { id username isAdmin }",
    "  }",
    "}",
    "",
    "mutation LogIn {",
    "  logIn(input: {login: \"ada\", password: \"correct horse\"}) { token }",
    "}",
    "",
    "query Me {",
    "  me {",
    "    username",
    "    conversations(first: 5) {",
    "      totalCount",
    "      edges { node { id title messageCount lastMessage { role content createdAt } } }",
    "      pageInfo { hasNextPage endCursor }",
    "    }",
    "  }",
    "}",
    "",
    "mutation StartConversation {",
    "  createConversation(input: {title: \"Trying chatql\"}) { id title }",
    "}",
    "",
    "mutation Send($conversationId: ID!) {",
    "  sendMessage(input: {conversationId: $conversationId, content: \"Hello!\"}) {",
    "    id role content createdAt",
    "  }",
    "}",
    "",
    "subscription MessageAdded($conversationId: ID!) {",
    "  messageAdded(conversationId: $conversationId) { id role content createdAt }",
    "}",
    "",
    "# A streamed answer: StartAnswer, put its id in the variables as messageId, run",
    "# AnswerStream in a second tab, then Append (raise seq by one each time) and Finish.",
    "",
    "mutation StartAnswer($conversationId: ID!) {",
    "  startMessage(input: {conversationId: $conversationId, model: \"my-model\"}) {",
    "    id status model",
    "  }",
    "}",
    "",
    "mutation Append($messageId: ID!) {",
    "  appendMessage(input: {messageId: $messageId, seq: 1, delta: \"Hello, \"}) { seq length }",
    "}",
    "",
    "mutation Finish($messageId: ID!) {",
    "  finishMessage(input: {messageId: $messageId, usage: {inputTokens: 12, outputTokens: 2}}) {",
    "    content status usage { inputTokens outputTokens }",
    "  }",
    "}",
    "",
    "subscription AnswerStream($messageId: ID!) {",
    "  messageStream(messageId: $messageId, afterSeq: 0) { seq delta status }",
    "}",
    "",
    "# Branches: Regenerate streams another answer beside the one in messageId; Branches",
    "# shows the arrows (\"2 / 3\" is siblingIndex + 1 of the siblings); SelectBranch with",
    "# another sibling's id makes its branch the one messages reads.",
    "",
    "mutation Regenerate($conversationId: ID!, $messageId: ID!) {",
    "  startMessage(input: {conversationId: $conversationId, alternativeTo: $messageId}) {",
    "    id siblingIndex siblings { id }",
    "  }",
    "}",
    "",
    "query Branches($conversationId: ID!) {",
    "  conversation(id: $conversationId) {",
    "    currentLeaf { id }",
    "    messages(last: 20) {",
    "      edges { node { id role content parent { id } siblingIndex siblings { id } } }",
    "    }",
    "  }",
    "}",
    "",
    "mutation SelectBranch($messageId: ID!) {",
    "  selectBranch(messageId: $messageId) { currentLeaf { id content } messageCount }",
    "}",
    "",
  ].join("\n");

  var DEFAULT_HEADERS = '{"Authorization": "Bearer <token>"}';
  var DEFAULT_VARIABLES =
    '{"conversationId": "<a conversation id from Me>", "messageId": "<the id StartAnswer gives>"}';

  var endpoint = new URL("/graphql", window.location.href);
  var socketUrl = new URL(endpoint.href);
  socketUrl.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";

  function authorization(headers) {
    var value = null;
    Object.keys(headers || {}).forEach(function (name) {
      if (name.toLowerCase() === "authorization") {
        value = String(headers[name]);
      }
    });
    // The example placeholder is no token at all.
    return value && value.indexOf("<token>") === -1 ? value : null;
  }

  var fetchers = {};
  var sockets = {};

  function fetcherFor(auth) {
    var key = auth || "";
    if (!fetchers[key]) {
      Object.keys(sockets).forEach(function (other) {
        sockets[other].dispose();
        delete sockets[other];
        delete fetchers[other];
      });
      sockets[key] = graphqlWs.createClient({
        url: socketUrl.href,
        lazy: true,
        connectionParams: auth ? { authorization: auth } : {},
      });
      fetchers[key] = GraphiQL.createFetcher({ url: endpoint.href, wsClient: sockets[key] });
    }
    return fetchers[key];
  }

  function fetcher(params, options) {
    var headers = (options && options.headers) || {};
    var sent = {};
    Object.keys(headers).forEach(function (name) {
      // Leave the placeholder out rather than send an invalid token.
      if (!(name.toLowerCase() === "authorization" && authorization(headers) === null)) {
        sent[name] = headers[name];
      }
    });
    return fetcherFor(authorization(headers))(params, Object.assign({}, options, { headers: sent }));
  }

  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: DEFAULT_QUERY,
      defaultHeaders: DEFAULT_HEADERS,
      variables: DEFAULT_VARIABLES,
      defaultEditorToolsVisibility: "headers",
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
    })
  );
})();
