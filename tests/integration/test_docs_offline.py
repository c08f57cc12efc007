"""/docs in headless Chromium with every host but loopback unreachable, and in a built wheel."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fastapi.openapi.docs import get_swagger_ui_html

import service
from tests.models import DEMO_DIR
from tests.processes import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
SWAGGER = "service/api/static/swagger"
SESSION_ROUTES = {
    "/v1/models/{model}/sessions",
    "/v1/sessions/{session_id}",
    "/v1/sessions/{session_id}/predict",
    "/v1/sessions/{session_id}/reset",
}
OFFLINE_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Name resolution fails for every host but loopback: nothing can be fetched from outside.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@pytest.fixture(scope="module")
def chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed: apt-get install -y chromium")
    return found


@pytest.fixture(scope="module")
def live(redis_server):
    with ServiceProcess(redis_server.url, DEMO_DIR) as service_process:
        yield service_process


def run_chromium(chromium: str, profile: Path, *args: str) -> str:
    result = subprocess.run(
        [chromium, *OFFLINE_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def rendered_paths(chromium: str, profile: Path, url: str) -> set[str]:
    """The operation paths Swagger UI rendered; virtual time lets its fetches finish."""
    for budget in (10_000, 30_000):
        dom = run_chromium(chromium, profile, f"--virtual-time-budget={budget}", "--dump-dom", url)
        paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
        if paths:
            return paths
    return set()


def test_swagger_ui_renders_the_session_routes_offline(chromium, live, tmp_path):
    paths = rendered_paths(chromium, tmp_path / "profile", f"{live.url}/docs")
    assert paths >= SESSION_ROUTES
    assert "/v1/models/{model}/predict" in paths

    screenshot = tmp_path / "docs.png"
    run_chromium(
        chromium,
        tmp_path / "profile",
        "--virtual-time-budget=10000",
        "--window-size=1280,1600",
        f"--screenshot={screenshot}",
        f"{live.url}/docs",
    )
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 50_000  # a blank page of this size compresses to a few kB


def test_the_same_browser_cannot_render_cdn_docs(chromium, live, tmp_path):
    """Control: FastAPI's stock page loads Swagger UI from a CDN, which these flags cut off,
    so the rendering above came from the packaged assets."""
    page = tmp_path / "cdn-docs.html"
    stock = get_swagger_ui_html(openapi_url=f"{live.url}/openapi.json", title="cdn")
    page.write_bytes(stock.body)
    assert "cdn.jsdelivr.net" in page.read_text()
    assert rendered_paths(chromium, tmp_path / "profile", page.as_uri()) == set()


def test_a_built_wheel_installs_the_swagger_assets(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "service", source / "service", ignore=shutil.ignore_patterns("__pycache__")
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), "."],
        cwd=source,
        check=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("lstm_stream-*.whl")
    assets = sorted(p.name for p in (ROOT / SWAGGER).iterdir())
    with zipfile.ZipFile(wheel) as archive:
        for name in assets:
            assert archive.read(f"{SWAGGER}/{name}") == (ROOT / SWAGGER / name).read_bytes()

    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    installed = subprocess.run(
        [sys.executable, "-c", "from service.api.docs import STATIC_DIR; print(STATIC_DIR)"],
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(installed).is_relative_to(target)
    assert sorted(p.name for p in (Path(installed) / "swagger").iterdir()) == assets
    assert Path(service.__file__).parent != Path(installed).parent
