"""Outbound proxies as the settings read them from the environment, and which URLs go through them."""

from __future__ import annotations

import pytest

from proxy.egress import EgressProxy
from proxy.settings import SettingsError, load_settings


def test_the_variables_curl_reads_lower_case_first():
    s = load_settings(env={"https_proxy": "proxy.corp:3128", "HTTPS_PROXY": "http://other:1",
                           "HTTP_PROXY": "http://plain:8080", "NO_PROXY": ".internal,models.example.com"})
    egress = s.egress()
    assert egress.for_url("https://openrouter.ai/api/v1") == "http://proxy.corp:3128"  # scheme added
    assert egress.for_url("http://vllm.example.org:8000/v1") == "http://plain:8080"
    assert egress.for_url("https://llm.internal/v1") is None  # a NO_PROXY domain and its subdomains
    assert egress.for_url("https://models.example.com/v1") is None
    assert egress.for_url("https://example.com/v1") == "http://proxy.corp:3128"
    assert load_settings(env={}).egress().for_url("https://openrouter.ai/api/v1") is None
    assert "proxy.corp" not in repr(s) and "proxy.corp" not in repr(egress)  # URLs may carry credentials


@pytest.mark.parametrize("url", ["http://localhost:9911/api/v1", "http://127.0.0.1:9911/api/v1",
                                 "http://[::1]:9911/api/v1", "https://api.localhost/v1"])
def test_loopback_upstreams_never_go_through_the_proxy(url):
    assert EgressProxy(https="http://proxy:3128", http="http://proxy:3128").for_url(url) is None


def test_no_proxy_star_bypasses_everything():
    assert EgressProxy(https="http://proxy:3128", no_proxy="*").for_url("https://openrouter.ai/api/v1") is None


@pytest.mark.parametrize(("url", "proxied"), [
    ("http://10.2.3.4:8000/v1", False), ("https://192.168.7.9/v1", False), ("http://[fd00::5]:8000/v1", False),
    ("http://11.0.0.1:8000/v1", True), ("https://192.169.0.1/v1", True), ("http://[fe80::1]/v1", True),
    ("https://openrouter.ai/api/v1", True),  # a name is never resolved to match a block
])
def test_no_proxy_cidr_blocks_match_upstreams_given_by_address(url, proxied):
    egress = load_settings(env={"HTTPS_PROXY": "http://proxy:3128", "HTTP_PROXY": "http://proxy:3128",
                                "NO_PROXY": "10.0.0.0/8, 192.168.0.0/16,fd00::/8,not/a-network"}).egress()
    assert (egress.for_url(url) is not None) is proxied


@pytest.mark.parametrize("value", ["socks5://proxy:1080", "https://proxy:443", "http://:3128", "http://proxy:port"])
def test_a_proxy_that_cannot_be_used_stops_start_up_naming_the_variable(value):
    with pytest.raises(SettingsError, match="HTTPS_PROXY"):
        load_settings(env={"HTTPS_PROXY": value})
