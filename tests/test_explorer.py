"""The explorer: GraphiQL served whole by chatql, tried in a real headless Chromium."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import OperationDefinitionNode, parse, validate
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

import explorer
from schema import make_schema
from tests.browser import PageEvents, chromium, drain
from tests.helpers import Api
from tests.process import Served, serve

WAIT_SECONDS = 30
QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
RESPONSE_EDITOR = ".graphiql-response .CodeMirror"
# The editor tools hold two editors, one of them hidden: variables, then headers.
TOOL_EDITORS = ".graphiql-editor-tool .CodeMirror"
VARIABLES, HEADERS = 0, 1
TYPED = (
    'mutation Grace { signUp(input: {username: "grace", email: "grace@example.com", '
    'password: "correct horse"}) { user { username isAdmin } } }'
)
SIGN_UP = """
mutation ($input: SignUpInput!) { signUp(input: $input) { token } }
"""
CREATE = "mutation ($title: String!) { createConversation(input: {title: $title}) { id } }"
SUBSCRIBE = "subscription Watch($id: ID!) { messageAdded(conversationId: $id) { content } }"


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    with serve(database_url, tmp_path) as server:
        yield server


# ---- served locally ------------------------------------------------------------------------


async def test_a_browser_asking_for_graphql_gets_the_explorer_page(api: Api) -> None:
    response = await api.client.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == explorer.CONTENT_SECURITY_POLICY
    assert response.text == explorer.PAGE


async def test_every_asset_of_the_page_is_served_by_chatql_itself(api: Api) -> None:
    page = (await api.client.get("/graphql", headers={"Accept": "text/html"})).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets == [
        "/explorer/favicon.svg",
        "/explorer/vendor/graphiql-4.1.2.min.css",
        "/explorer/explorer.css",
        "/explorer/vendor/react-18.3.1.production.min.js",
        "/explorer/vendor/react-dom-18.3.1.production.min.js",
        "/explorer/vendor/graphql-ws-6.0.8.min.js",
        "/explorer/vendor/graphiql-4.1.2.min.js",
        "/explorer/explorer.js",
    ]
    kinds = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
    for asset in assets:
        response = await api.client.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["content-type"].startswith(kinds[Path(asset).suffix]), asset


def test_the_stylesheet_loads_its_fonts_and_images_from_data_urls_only() -> None:
    css = (explorer.STATIC_DIR / "vendor" / "graphiql-4.1.2.min.css").read_text()
    urls = re.findall(r"url\(\s*['\"]?([^'\")]+)", css)
    assert urls
    assert [url for url in urls if not url.startswith("data:")] == []
    assert "@import" not in css


def test_the_vendored_bundles_are_the_pinned_ones() -> None:
    vendor = explorer.STATIC_DIR / "vendor"
    for line in (vendor / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert sorted(path.name for path in vendor.glob("*.LICENSE.txt")) == [
        "graphiql.LICENSE.txt",
        "graphql-ws.LICENSE.txt",
        "react-dom.LICENSE.txt",
        "react.LICENSE.txt",
    ]


# ---- in a real browser ---------------------------------------------------------------------


def editor_value(driver: WebDriver, selector: str, index: int = 0) -> str:
    value: str = driver.execute_script(
        "return document.querySelectorAll(arguments[0])[arguments[1]].CodeMirror.getValue()",
        selector,
        index,
    )
    return value


def set_editor(driver: WebDriver, selector: str, value: str, index: int = 0) -> None:
    driver.execute_script(
        "document.querySelectorAll(arguments[0])[arguments[1]].CodeMirror.setValue(arguments[2])",
        selector,
        index,
        value,
    )


def open_explorer(driver: WebDriver, served: Served) -> None:
    driver.get(f"{served.url}/graphql")
    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, QUERY_EDITOR)
    )


def run_shortcut(driver: WebDriver) -> None:
    ActionChains(driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()


def test_a_query_typed_into_the_explorer_runs_and_its_result_appears(
    served: Served, tmp_path: Path
) -> None:
    events = PageEvents()
    with chromium(tmp_path / "profile") as driver:
        open_explorer(driver, served)
        assert "signUp(input:" in editor_value(driver, QUERY_EDITOR)  # the default document
        defaults = [editor_value(driver, TOOL_EDITORS, index) for index in (VARIABLES, HEADERS)]
        assert defaults == [
            '{"conversationId": "<a conversation id from Me>", '
            '"messageId": "<the id StartAnswer gives>"}',
            '{"Authorization": "Bearer <token>"}',
        ]

        editor = driver.find_element(By.CSS_SELECTOR, QUERY_EDITOR)
        ActionChains(driver).click(editor).key_down(Keys.CONTROL).send_keys("a").key_up(
            Keys.CONTROL
        ).send_keys(Keys.DELETE).send_keys(TYPED).perform()
        # The tab takes the operation's name once GraphiQL has parsed what was typed.
        WebDriverWait(driver, WAIT_SECONDS).until(
            lambda d: d.find_element(By.CSS_SELECTOR, ".graphiql-tab-active").text == "Grace"
        )
        run_shortcut(driver)
        WebDriverWait(driver, WAIT_SECONDS).until(
            lambda d: "signUp" in editor_value(d, RESPONSE_EDITOR)
        )
        result = json.loads(editor_value(driver, RESPONSE_EDITOR))
        typed = editor_value(driver, QUERY_EDITOR)

        screenshot = tmp_path / "explorer.png"
        assert driver.save_screenshot(str(screenshot))
        print(f"explorer screenshot: {screenshot}")
        drain(driver, events)

    assert typed == TYPED
    assert result == {"data": {"signUp": {"user": {"username": "grace", "isAdmin": True}}}}
    assert (events.failed_requests, events.console_errors) == ([], [])
    assert screenshot.stat().st_size > 10_000


def test_a_subscription_in_the_explorer_goes_over_graphql_ws_with_the_header_editors_token(
    served: Served, tmp_path: Path
) -> None:
    token = httpx.post(
        f"{served.url}/graphql",
        json={
            "query": SIGN_UP,
            "variables": {
                "input": {"username": "ada", "email": "ada@example.com", "password": "s3cret-pw"}
            },
        },
    ).json()["data"]["signUp"]["token"]
    conversation = httpx.post(
        f"{served.url}/graphql",
        json={"query": CREATE, "variables": {"title": "Watched"}},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["data"]["createConversation"]["id"]

    events = PageEvents()
    with chromium(tmp_path / "profile") as driver:
        open_explorer(driver, served)
        authorization = json.dumps({"Authorization": f"Bearer {token}"})
        set_editor(driver, TOOL_EDITORS, authorization, HEADERS)
        set_editor(driver, TOOL_EDITORS, json.dumps({"id": conversation}), VARIABLES)
        set_editor(driver, QUERY_EDITOR, SUBSCRIBE)
        WebDriverWait(driver, WAIT_SECONDS).until(
            lambda d: d.find_element(By.CSS_SELECTOR, ".graphiql-tab-active").text == "Watch"
        )
        driver.find_element(By.CSS_SELECTOR, QUERY_EDITOR).click()
        run_shortcut(driver)
        WebDriverWait(driver, WAIT_SECONDS).until(
            lambda d: len(drain(d, events).websocket_frames_sent) >= 2
        )

    frames: list[dict[str, Any]] = events.websocket_frames_sent
    assert events.websockets == [served.url.replace("http://", "ws://") + "/graphql"]
    assert frames[0] == {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
    assert {key: frames[1][key] for key in ("type", "payload")} == {
        "type": "subscribe",
        "payload": {
            "query": SUBSCRIBE,
            "operationName": "Watch",
            "variables": {"id": conversation},
        },
    }
    assert events.failed_requests == []


def test_the_default_document_is_valid_against_the_schema_and_shows_a_streamed_answer() -> None:
    """Every operation of the explorer's default document (a JS array of string literals)
    validates against the schema; the streamed answer's four and the branches' three are among
    them."""
    script = (Path(explorer.__file__).parent / "static" / "explorer.js").read_text()
    body = script.split("var DEFAULT_QUERY = [", 1)[1].split("].join(", 1)[0]
    lines = [
        json.loads(literal) for literal in re.findall(r'^\s*("(?:[^"\\]|\\.)*"),$', body, re.M)
    ]
    document = parse("\n".join(lines))
    assert validate(make_schema()._schema, document) == []
    names = [
        node.name.value
        for node in document.definitions
        if isinstance(node, OperationDefinitionNode) and node.name is not None
    ]
    assert names[-7:] == [
        *("StartAnswer", "Append", "Finish", "AnswerStream"),
        *("Regenerate", "Branches", "SelectBranch"),
    ]
