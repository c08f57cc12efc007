"""/docs is Swagger UI from assets inside the package; nothing is fetched from elsewhere."""

import re
from pathlib import Path

import service

SWAGGER_DIR = Path(service.__file__).parent / "api" / "static" / "swagger"


def test_docs_page_loads_only_local_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert urls and all(url.startswith("/static/swagger/") for url in urls), urls
    assert "url: '/openapi.json'" in page.text
    assert "http://" not in page.text and "https://" not in page.text
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.content == (SWAGGER_DIR / Path(url).name).read_bytes()


def test_assets_are_served_with_their_types(client):
    types = {
        "swagger-ui-bundle.js": "javascript",
        "swagger-ui.css": "text/css",
        "favicon-32x32.png": "image/png",
    }
    for name, kind in types.items():
        assert kind in client.get(f"/static/swagger/{name}").headers["content-type"]


def test_the_bundle_is_complete_and_licensed():
    bundle = (SWAGGER_DIR / "swagger-ui-bundle.js").read_text()
    assert "SwaggerUIBundle" in bundle and len(bundle) > 1_000_000
    assert "sourceMappingURL" not in bundle  # no request for a .map file we do not ship
    assert "Apache License" in (SWAGGER_DIR / "LICENSE").read_text()


def test_redoc_is_not_served(client):
    assert client.get("/redoc").status_code == 404
