// The shell: sign-in screen, sidebar, language switcher, sign-out, and the page module for the path.
import { api } from "./api.js";
import { h } from "./dom.js";
import { t, getLang, setLang, LANGS } from "./i18n.js";
import { errorBox, hideTooltip } from "./widgets.js";

const PAGES = {
  logs: { adminOnly: true, load: () => import("./logs.js") },
  usage: { adminOnly: false, load: () => import("./usage.js") },
  tokens: { adminOnly: true, load: () => import("./tokens.js") },
  cache: { adminOnly: false, load: () => import("./cache.js") },
};
const ORDER = ["logs", "usage", "tokens", "cache"];

const root = document.getElementById("app");
let session = null;
let mounted = null;
let notice = "";

function pageFromPath() {
  const name = location.pathname.replace(/^\/+|\/+$/g, "");
  return PAGES[name] ? name : "logs";
}

function allowed() {
  return ORDER.filter((p) => session && (session.kind === "admin" || !PAGES[p].adminOnly));
}

function unmount() {
  hideTooltip();
  if (mounted && typeof mounted.unmount === "function") mounted.unmount();
  mounted = null;
}

function langSwitcher() {
  const sel = h("select", { class: "lang-select", "aria-label": t("shell.language"), "data-testid": "lang" },
    LANGS.map(([code, label]) => h("option", { value: code, selected: code === getLang() }, label)));
  sel.addEventListener("change", () => {
    setLang(sel.value);
    render().then(() => {
      const again = document.querySelector(".lang-select");
      if (again) again.focus();
    });
  });
  return sel;
}

function brand() {
  return h("div", { class: "brand" },
    h("span", { class: "brand-mark", "aria-hidden": "true" }, "◉◉"),
    h("span", { class: "brand-name" }, "ORCACHE"),
    h("span", { class: "brand-tag" }, t("shell.tagline")));
}

function signInScreen() {
  const input = h("input", { type: "password", name: "token", id: "signin-token", autocomplete: "off",
    spellcheck: "false", required: true, placeholder: "sk-orc-…" });
  const error = h("div", { class: "signin-error", role: "alert", "aria-live": "assertive" }, notice);
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, t("signin.submit"));
  const form = h("form", { class: "signin-form", novalidate: true },
    h("label", { for: "signin-token" }, t("signin.label")), input,
    h("p", { class: "hint" }, t("signin.hint")), error, submit);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    if (!token) {
      error.textContent = t("signin.empty");
      input.focus();
      return;
    }
    submit.disabled = true;
    error.textContent = "";
    try {
      session = await api("/auth/session", { method: "POST", body: { token } });
      input.value = "";
      notice = "";
      await render();
    } catch (err) {
      error.textContent = err.status === 401 ? t("signin.invalid") : err.message;
      submit.disabled = false;
      input.select();
    }
  });
  return h("main", { class: "signin", id: "main" },
    h("div", { class: "signin-card panel" },
      brand(),
      h("h1", {}, t("signin.title")),
      form,
      h("div", { class: "signin-footer" }, langSwitcher())));
}

function sidebar(current) {
  const nav = h("nav", { class: "nav", "aria-label": t("shell.nav") },
    h("ul", {}, allowed().map((name, i) => h("li", {},
      h("a", { href: `/${name}`, class: "nav-link", "aria-current": name === current ? "page" : null,
        "data-page": name },
      h("span", { class: "nav-num", "aria-hidden": "true" }, String(i + 1).padStart(2, "0")),
      h("span", { class: "nav-label" }, t(`nav.${name}`)))))));
  const who = session.kind === "admin" ? t("shell.admin") : session.name;
  const signOut = h("button", { type: "button", class: "btn btn-small", "data-testid": "sign-out" }, t("shell.sign_out"));
  signOut.addEventListener("click", async () => {
    try {
      await api("/auth/session", { method: "DELETE" });
    } finally {
      session = null;
      history.replaceState(null, "", "/logs");
      await render();
    }
  });
  return h("aside", { class: "sidebar" },
    brand(),
    nav,
    h("div", { class: "sidebar-foot" },
      h("div", { class: "who" },
        h("span", { class: "who-label" }, t("shell.signed_in_as")),
        h("span", { class: "who-name", "data-testid": "who" }, who),
        session.kind === "token" ? h("span", { class: "who-kind" }, t("shell.token_holder")) : null),
      h("div", { class: "sidebar-controls" }, langSwitcher(), signOut)));
}

async function render() {
  unmount();
  document.documentElement.lang = getLang() === "zh" ? "zh-CN" : "en";
  if (!session) {
    document.title = `${t("signin.title")} · orcache`;
    root.replaceChildren(signInScreen());
    document.getElementById("signin-token").focus();
    return;
  }
  let name = pageFromPath();
  const pages = allowed();
  if (!pages.includes(name)) {
    name = pages[0];
    history.replaceState(null, "", `/${name}${location.search}`);
  }
  const main = h("main", { class: "content", id: "main", tabindex: "-1", "data-page": name });
  root.replaceChildren(
    h("a", { class: "skip-link", href: "#main" }, t("shell.skip")),
    h("div", { class: "layout" }, sidebar(name), main));
  document.title = `${t(`page.${name}`)} · orcache`;
  try {
    const mod = await PAGES[name].load();
    mounted = mod.mount(main, { session });
  } catch (err) {
    main.replaceChildren(errorBox(err));
  }
}

window.addEventListener("orcache:unauthorized", () => {
  if (!session) return;
  session = null;
  notice = t("signin.expired");
  render();
});

async function boot() {
  try {
    session = await api("/auth/session");
  } catch (err) {
    session = null;
    if (err.status !== 401) notice = err.message;
  }
  await render();
}

boot();
