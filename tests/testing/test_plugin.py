"""The pytest plugin as a user gets it: a project of their own, run by a pytest subprocess
with the plugin loaded from the installed entry point, under pytest-asyncio and anyio."""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("pytest_asyncio", reason="the dev extra installs pytest-asyncio")

USER_TESTS = """
    import pytest

    from sessionws.testing import wait_closed, wait_sent


    @pytest.mark.{marker}
    async def test_logout_closes_the_other_nodes(sessionws_cluster, sessionws_connection):
        async with sessionws_cluster(3) as cluster:
            tabs = [sessionws_connection(f"tab{{index}}") for index in range(3)]
            for index, tab in enumerate(tabs):
                await cluster[index].register(tab, ["session-1", "user:42"])
            await cluster[0].send_all("user:42", "hello")
            for tab in tabs:
                await wait_sent(tab, "hello")
            await cluster[2].revoke("user:42")
            for tab in tabs:
                await wait_closed(tab, code=4401)


    @pytest.mark.{marker}
    async def test_a_cut_node_catches_up(sessionws_cluster):
        async with sessionws_cluster(2) as cluster:
            tab, _ = await cluster.connect(1, "session-1")
            async with cluster.cut_off(1):
                await cluster[0].close_all("session-1")
            await wait_closed(tab, code=1000)
"""

STRICT_INI = """
    [pytest]
    addopts = --strict-config --strict-markers -p no:cacheprovider
    filterwarnings = error
    {extra}
"""


ASYNCIO_OPTION = "asyncio_default_fixture_loop_scope = function"


def _project(pytester: pytest.Pytester, marker: str, extra_ini: str = ASYNCIO_OPTION) -> None:
    pytester.makeini(textwrap.dedent(STRICT_INI.format(extra=extra_ini)))
    pytester.makepyfile(test_app=textwrap.dedent(USER_TESTS.format(marker=marker)))


@pytest.mark.parametrize("loop_scope", ["function", "module"])
def test_fixtures_work_under_pytest_asyncio(pytester: pytest.Pytester, loop_scope: str) -> None:
    marker = f'asyncio(loop_scope="{loop_scope}")'
    _project(pytester, marker)
    result = pytester.runpytest_subprocess("-p", "asyncio")
    result.assert_outcomes(passed=2)


def test_fixtures_work_under_pytest_asyncio_auto_mode(pytester: pytest.Pytester) -> None:
    _project(pytester, "asyncio", f"{ASYNCIO_OPTION}\n    asyncio_mode = auto")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_fixtures_work_under_anyio(pytester: pytest.Pytester, backend: str) -> None:
    _project(pytester, "anyio", "")
    pytester.makeconftest(
        f"""
        import pytest

        @pytest.fixture
        def anyio_backend():
            return "{backend}"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:asyncio")
    result.assert_outcomes(passed=2)


def test_a_failed_wait_fails_the_users_test_with_what_was_seen(pytester: pytest.Pytester) -> None:
    pytester.makeini(textwrap.dedent(STRICT_INI.format(extra=ASYNCIO_OPTION)))
    pytester.makepyfile(
        test_app="""
        import pytest
        from sessionws.testing import wait_closed

        @pytest.mark.asyncio
        async def test_forgot_to_close(sessionws_cluster):
            async with sessionws_cluster(1) as cluster:
                tab, _ = await cluster.connect(0, "session-1", name="tab")
                await wait_closed(tab, timeout=0.2)
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*AssertionError: after 0.2s: <RecordingConnection 'tab' open, 0 sent> was not closed (frames: [])"]
    )


def test_the_plugin_changes_nothing_for_a_suite_that_does_not_use_it(pytester: pytest.Pytester) -> None:
    """A user's own fixture of the same name wins; no option, marker or autouse fixture is added."""
    pytester.makeini(textwrap.dedent(STRICT_INI.format(extra=ASYNCIO_OPTION)))
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def sessionws_connection():
            return "mine"
        """
    )
    pytester.makepyfile(
        test_app="""
        def test_my_fixture_wins(sessionws_connection, request):
            assert sessionws_connection == "mine"
            mine = [name for name in request.fixturenames if name.startswith("sessionws")]
            assert mine == ["sessionws_connection"]  # and no autouse fixture of the plugin
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    with_plugin = pytester.runpytest_subprocess("--help").stdout.str()
    without_plugin = pytester.runpytest_subprocess("--help", "-p", "no:sessionws").stdout.str()
    assert with_plugin == without_plugin
    fixtures = pytester.runpytest_subprocess("--fixtures").stdout.str()
    assert "sessionws_cluster " in fixtures.replace("--", " ")


def test_without_autoload_the_conftest_names_the_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    _project(pytester, "anyio", "")
    pytester.makeconftest(
        """
        import pytest

        pytest_plugins = ["anyio.pytest_plugin", "sessionws.testing.plugin"]

        @pytest.fixture
        def anyio_backend():
            return "asyncio"
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=2)
