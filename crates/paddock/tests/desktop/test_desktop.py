"""E2B's desktop SDK (Python), unchanged, against Paddock's `desktop` template."""

import io
import urllib.parse

import pytest
import requests
from e2b import CommandExitException
from PIL import Image

from conftest import API_URL, DOMAIN, SIZE, wait_until

PAGE = "<html><head><title>paddock desktop page</title></head><body>hi</body></html>"


def through_proxy(url: str) -> requests.Response:
    """GETs a `get_url()` URL (https://6080-{id}.{domain}/...) from the plain-HTTP test
    server: the same Host, sent to the API's address (no wildcard DNS needed)."""
    u = urllib.parse.urlsplit(url)
    return requests.get(
        f"{API_URL}{u.path}?{u.query}", headers={"Host": u.netloc}, timeout=30
    )


def test_default_template_is_desktop(desktop):
    assert desktop.get_info().template_id in ("desktop",), desktop.get_info()


def test_screenshot_is_a_png_of_the_configured_size(desktop):
    png = bytes(desktop.screenshot())
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    assert img.size == SIZE
    assert desktop.get_screen_size() == SIZE
    # The SDK removes its file again.
    assert desktop.commands.run("ls /tmp | grep -c screenshot- || true").stdout.strip() == "0"
    # The stream form too.
    assert b"".join(desktop.screenshot(format="stream"))[:4] == b"\x89PNG"


def test_mouse_and_keyboard(desktop):
    desktop.move_mouse(123, 45)
    assert desktop.get_cursor_position() == (123, 45)
    desktop.left_click(200, 300)
    assert desktop.get_cursor_position() == (200, 300)
    desktop.double_click()
    desktop.middle_click()
    desktop.scroll("down", 3)
    desktop.scroll("up")
    desktop.drag((10, 400), (60, 420))
    desktop.press("esc")
    desktop.press(["ctrl", "shift"])


def test_text_typed_into_an_editor_is_read_back_with_xclip(desktop):
    desktop.launch("org.xfce.mousepad")
    windows = wait_until(
        lambda: [w for w in desktop.get_application_windows("mousepad") if w], 60
    )
    assert windows, "no Mousepad window"
    assert "Mousepad" in desktop.get_window_title(windows[0])
    text = "Hello from Paddock, typed: 1+1=2 & <ok>"
    desktop.left_click(SIZE[0] // 2, SIZE[1] // 2)
    desktop.write(text, chunk_size=10, delay_in_ms=10)
    desktop.press(["ctrl", "a"])
    desktop.press(["ctrl", "c"])
    got = wait_until(
        lambda: desktop.commands.run("xclip -selection clipboard -o").stdout == text, 20
    )
    assert got, desktop.commands.run("xclip -selection clipboard -o || true").stdout
    assert desktop.get_current_window_id() == windows[0]


def test_open_starts_chromium_and_the_editor(desktop):
    desktop.files.write("/tmp/page.html", PAGE)
    desktop.open("/tmp/page.html")
    windows = wait_until(
        lambda: [w for w in desktop.get_application_windows("chromium") if w], 60
    )
    assert windows, desktop.commands.run("ps -eo pid,args | head -50").stdout
    title = wait_until(
        lambda: "paddock desktop page" in desktop.get_window_title(windows[-1])
        and desktop.get_window_title(windows[-1]),
        30,
    )
    assert title, desktop.get_window_title(windows[-1])
    desktop.commands.run("pkill -x chromium || true")
    # A text file opens in the editor.
    desktop.files.write("/tmp/note.txt", "a note")
    desktop.open("/tmp/note.txt")
    titled = wait_until(
        lambda: any(
            "note.txt" in desktop.get_window_title(w)
            for w in desktop.get_application_windows("mousepad")
            if w
        ),
        60,
    )
    assert titled, [desktop.get_window_title(w) for w in desktop.get_application_windows("mousepad")]


def test_bad_input_gets_a_clear_error_and_the_desktop_keeps_working(desktop):
    # A display that does not exist.
    with pytest.raises(CommandExitException) as e:
        desktop.commands.run("xdotool getmouselocation", envs={"DISPLAY": ":42"})
    assert "Can't open display" in e.value.stderr
    # A window id that does not exist.
    with pytest.raises(CommandExitException) as e:
        desktop.get_window_title("0x7fffff0")
    assert "BadWindow" in e.value.stderr
    # The stream started twice.
    desktop.stream.start()
    try:
        with pytest.raises(RuntimeError, match="Stream is already running"):
            desktop.stream.start()
    finally:
        desktop.stream.stop()
    # And the desktop still works.
    desktop.move_mouse(7, 8)
    assert desktop.get_cursor_position() == (7, 8)
    assert Image.open(io.BytesIO(bytes(desktop.screenshot()))).size == SIZE


def test_stream_without_auth_is_served_through_the_proxy(desktop):
    desktop.stream.start()
    try:
        url = desktop.stream.get_url()
        host = f"6080-{desktop.sandbox_id}.{DOMAIN}"
        assert url == f"https://{host}/vnc.html?autoconnect=true&resize=scale", url
        r = through_proxy(url)
        assert r.status_code == 200, r.text
        assert "noVNC" in r.text
        # noVNC's scripts come through the same origin.
        assert through_proxy(f"https://{host}/app/ui.js").status_code == 200
        assert desktop.stream.get_url(view_only=True, resize="remote").endswith(
            "view_only=true&resize=remote"
        )
    finally:
        desktop.stream.stop()
    assert wait_until(lambda: through_proxy(url).status_code == 502, 20)


def test_stream_with_auth_sets_a_vnc_password(desktop):
    desktop.stream.start(require_auth=True)
    try:
        key = desktop.stream.get_auth_key()
        assert len(key) == 16
        url = desktop.stream.get_url(auth_key=key)
        assert url.endswith(f"&password={key}"), url
        assert through_proxy(url).status_code == 200
        args = desktop.commands.run("ps -o args= -C x11vnc").stdout
        assert "-usepw" in args and "-rfbport 5900" in args, args
    finally:
        desktop.stream.stop()
