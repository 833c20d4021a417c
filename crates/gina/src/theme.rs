//! Themes: per internal domain, the CSS, logo, colours, every text and every
//! template of the portal, the container file and GINA's mails.
//!
//! A theme folder (`[gina] themes_dir`) holds one folder per internal domain
//! and optionally `default/` for all of them:
//!
//! ```text
//! themes/
//!   default/            applies to every domain without its own folder
//!   example.com/
//!     theme.toml        colours and names ([colors] primary = "#0b3d91", …)
//!     texts.de.toml     any of the texts (key = "text"), German
//!     texts.en.toml     … English
//!     portal.css        replaces the portal's style sheet (a template)
//!     logo.png          or logo.svg: shown in the portal and the mails
//!     templates/*.html  any template, by its file name
//! ```
//!
//! Whatever a folder leaves out falls back to `default/`, then to the
//! embedded defaults, so a theme can be as small as a logo and one colour.
//! Templates are minijinja with auto-escaping for `.html`; texts are plain
//! text (escaped where inserted) with `{name}` placeholders filled by the
//! `fill` filter.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, Value};
use serde::Serialize;

/// A language the product speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Lang {
    /// German.
    De,
    /// English.
    En,
}

impl Lang {
    /// Both languages, in the order the switch shows them.
    pub const ALL: [Lang; 2] = [Lang::De, Lang::En];

    /// The BCP 47 tag.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::De => "de",
            Lang::En => "en",
        }
    }

    /// `de`, `de-CH`, `EN-gb` …; `None` for languages we do not speak.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "de" => Some(Lang::De),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The best match for an `Accept-Language` header (highest q first),
    /// `fallback` when nothing matches.
    pub fn from_accept_language(header: &str, fallback: Lang) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let Some(lang) = parts.next().and_then(Lang::from_tag) else {
                continue;
            };
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map_or(fallback, |(_, l)| l)
    }
}

/// A theme could not be loaded or a template failed.
#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    /// A file of a theme folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A texts or theme file is not valid TOML (or not `key = "text"`).
    #[error("{path}: {message}")]
    Toml {
        /// The file.
        path: String,
        /// The parser's complaint.
        message: String,
    },
    /// A template does not compile or failed to render.
    #[error("template {name}: {message}")]
    Template {
        /// The template's name.
        name: String,
        /// minijinja's complaint.
        message: String,
    },
}

/// A logo image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logo {
    /// The image bytes.
    pub bytes: Vec<u8>,
    /// `image/png` or `image/svg+xml`.
    pub content_type: &'static str,
}

/// Every embedded default file: (name, content).
const EMBEDDED_TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../templates/layout.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("register.html", include_str!("../templates/register.html")),
    ("read.html", include_str!("../templates/read.html")),
    ("compose.html", include_str!("../templates/compose.html")),
    ("settings.html", include_str!("../templates/settings.html")),
    ("reset.html", include_str!("../templates/reset.html")),
    ("signup.html", include_str!("../templates/signup.html")),
    ("home.html", include_str!("../templates/home.html")),
    ("notice.html", include_str!("../templates/notice.html")),
    (
        "container.html",
        include_str!("../templates/container.html"),
    ),
    ("carrier.html", include_str!("../templates/carrier.html")),
    ("carrier.txt", include_str!("../templates/carrier.txt")),
    (
        "initial_password.txt",
        include_str!("../templates/initial_password.txt"),
    ),
    ("verify.txt", include_str!("../templates/verify.txt")),
    ("receipt.txt", include_str!("../templates/receipt.txt")),
    ("portal.css", include_str!("../templates/portal.css")),
];
const EMBEDDED_TEXTS_DE: &str = include_str!("../texts/de.toml");
const EMBEDDED_TEXTS_EN: &str = include_str!("../texts/en.toml");
const EMBEDDED_THEME: &str = include_str!("../texts/theme.toml");
const EMBEDDED_LOGO: &[u8] = include_bytes!("../templates/logo.svg");

/// One theme, ready to render. Shared between requests (`Arc`).
pub struct Theme {
    name: String,
    env: Environment<'static>,
    texts: BTreeMap<Lang, BTreeMap<String, String>>,
    /// The texts and settings as template values, built once: converting
    /// ~250 texts per page would cost more than rendering the page.
    text_values: BTreeMap<Lang, Value>,
    settings_value: Value,
    logo: Logo,
}

impl std::fmt::Debug for Theme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Theme")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Replaces `{name}` placeholders in a text.
fn fill(text: String, kwargs: minijinja::value::Kwargs) -> Result<String, minijinja::Error> {
    let mut out = text;
    for key in kwargs.args() {
        let v: Value = kwargs.get(key)?;
        out = out.replace(&format!("{{{key}}}"), &v.to_string());
    }
    Ok(out)
}

/// Layers: the embedded defaults, then `default/`, then the domain's folder.
#[derive(Clone, Default)]
struct Layer {
    templates: BTreeMap<String, String>,
    texts: BTreeMap<Lang, BTreeMap<String, String>>,
    settings: BTreeMap<String, toml::Value>,
    logo: Option<Logo>,
}

fn read_flat_toml(path: &str, text: &str) -> Result<BTreeMap<String, String>, ThemeError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ThemeError::Toml {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
    table
        .into_iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => Ok((k, s)),
            _ => Err(ThemeError::Toml {
                path: path.to_owned(),
                message: format!("`{k}` must be a string"),
            }),
        })
        .collect()
}

fn read_settings(path: &str, text: &str) -> Result<BTreeMap<String, toml::Value>, ThemeError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ThemeError::Toml {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
    Ok(table.into_iter().collect())
}

impl Layer {
    fn embedded() -> Result<Layer, ThemeError> {
        let mut texts = BTreeMap::new();
        texts.insert(
            Lang::De,
            read_flat_toml("<embedded de.toml>", EMBEDDED_TEXTS_DE)?,
        );
        texts.insert(
            Lang::En,
            read_flat_toml("<embedded en.toml>", EMBEDDED_TEXTS_EN)?,
        );
        Ok(Layer {
            templates: EMBEDDED_TEMPLATES
                .iter()
                .map(|(n, c)| ((*n).to_owned(), (*c).to_owned()))
                .collect(),
            texts,
            settings: read_settings("<embedded theme.toml>", EMBEDDED_THEME)?,
            logo: Some(Logo {
                bytes: EMBEDDED_LOGO.to_vec(),
                content_type: "image/svg+xml",
            }),
        })
    }

    /// Reads a theme folder; what is missing stays as in `self`.
    fn overlay(&self, dir: &Path) -> Result<Layer, ThemeError> {
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| ThemeError::Io { path, source }
        };
        let read = |p: &Path| -> Result<Option<String>, ThemeError> {
            match std::fs::read_to_string(p) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(p)(e)),
            }
        };
        let mut out = self.clone();
        for lang in Lang::ALL {
            let p = dir.join(format!("texts.{}.toml", lang.tag()));
            if let Some(text) = read(&p)? {
                let over = read_flat_toml(&p.display().to_string(), &text)?;
                out.texts.entry(lang).or_default().extend(over);
            }
        }
        let p = dir.join("theme.toml");
        if let Some(text) = read(&p)? {
            let over = read_settings(&p.display().to_string(), &text)?;
            for (k, v) in over {
                // Tables (such as [colors]) merge key by key.
                match (out.settings.get_mut(&k), v) {
                    (Some(toml::Value::Table(base)), toml::Value::Table(t)) => base.extend(t),
                    (_, v) => {
                        out.settings.insert(k, v);
                    }
                }
            }
        }
        let p = dir.join("portal.css");
        if let Some(css) = read(&p)? {
            out.templates.insert("portal.css".into(), css);
        }
        for (file, ct) in [("logo.svg", "image/svg+xml"), ("logo.png", "image/png")] {
            let p = dir.join(file);
            match std::fs::read(&p) {
                Ok(bytes) => {
                    out.logo = Some(Logo {
                        bytes,
                        content_type: ct,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
        }
        let tdir = dir.join("templates");
        match std::fs::read_dir(&tdir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io(&tdir))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".html") || name.ends_with(".txt") || name.ends_with(".css") {
                        let p = entry.path();
                        if let Some(t) = read(&p)? {
                            out.templates.insert(name, t);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&tdir)(e)),
        }
        Ok(out)
    }

    fn build(self, name: &str) -> Result<Theme, ThemeError> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|n| {
            if n.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        env.add_filter("fill", fill);
        for (n, src) in self.templates {
            env.add_template_owned(n.clone(), src)
                .map_err(|e| ThemeError::Template {
                    name: format!("{name}/{n}"),
                    message: e.to_string(),
                })?;
        }
        let text_values = Lang::ALL
            .iter()
            .map(|l| {
                let t = self.texts.get(l).cloned().unwrap_or_default();
                (*l, Value::from_serialize(&t))
            })
            .collect();
        Ok(Theme {
            name: name.to_owned(),
            env,
            texts: self.texts,
            text_values,
            settings_value: Value::from_serialize(&self.settings),
            logo: self.logo.unwrap_or(Logo {
                bytes: EMBEDDED_LOGO.to_vec(),
                content_type: "image/svg+xml",
            }),
        })
    }
}

impl Theme {
    /// The theme's name: the domain, or `default`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The logo.
    pub fn logo(&self) -> &Logo {
        &self.logo
    }

    /// A text; the key itself when no layer has it (a visible gap, never a
    /// panic).
    pub fn text(&self, lang: Lang, key: &str) -> String {
        self.texts
            .get(&lang)
            .and_then(|t| t.get(key))
            .cloned()
            .unwrap_or_else(|| key.to_owned())
    }

    /// All texts of a language (for templates: `t.key`).
    pub fn texts(&self, lang: Lang) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.texts.get(&lang).unwrap_or(&EMPTY)
    }

    /// Renders a template. The context gets `t` (texts), `lang`, `theme`
    /// (settings such as colours) and `theme_name` besides `ctx`.
    pub fn render(&self, template: &str, lang: Lang, ctx: Value) -> Result<String, ThemeError> {
        let err = |e: minijinja::Error| ThemeError::Template {
            name: format!("{}/{template}", self.name),
            message: format!("{e:#}"),
        };
        let tmpl = self.env.get_template(template).map_err(err)?;
        let base = minijinja::context! {
            t => self.text_values.get(&lang).cloned().unwrap_or_default(),
            lang => lang.tag(),
            theme => self.settings_value.clone(),
            theme_name => &self.name,
        };
        tmpl.render(minijinja::context! { ..ctx, ..base })
            .map_err(err)
    }

    /// The theme names this theme's templates know (for tests).
    pub fn has_template(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }
}

/// The themes of all internal domains.
#[derive(Debug, Clone)]
pub struct Themes {
    default: Arc<Theme>,
    domains: BTreeMap<String, Arc<Theme>>,
}

impl Themes {
    /// Only the embedded defaults.
    pub fn embedded() -> Result<Themes, ThemeError> {
        Ok(Themes {
            default: Arc::new(Layer::embedded()?.build("default")?),
            domains: BTreeMap::new(),
        })
    }

    /// Loads `dir/default/` and one folder per domain in `dir` (names are
    /// lower-cased domains). A missing `dir` means the embedded defaults.
    pub fn load(dir: Option<&Path>) -> Result<Themes, ThemeError> {
        let embedded = Layer::embedded()?;
        let Some(dir) = dir.filter(|d| d.exists()) else {
            return Ok(Themes {
                default: Arc::new(embedded.build("default")?),
                domains: BTreeMap::new(),
            });
        };
        let base = embedded.overlay(&dir.join("default"))?;
        let mut domains = BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(|source| ThemeError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ThemeError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().to_lowercase();
            if name == "default" || !entry.path().is_dir() {
                continue;
            }
            let layer = base.overlay(&entry.path())?;
            domains.insert(name.clone(), Arc::new(layer.build(&name)?));
        }
        Ok(Themes {
            default: Arc::new(base.build("default")?),
            domains,
        })
    }

    /// The theme of an internal domain (normalised), else the default one.
    pub fn for_domain(&self, domain: &str) -> &Arc<Theme> {
        self.domains
            .get(&domain.to_ascii_lowercase())
            .unwrap_or(&self.default)
    }

    /// The default theme (pages not tied to a domain).
    pub fn default_theme(&self) -> &Arc<Theme> {
        &self.default
    }

    /// Every theme name (the default and each domain).
    pub fn names(&self) -> Vec<String> {
        std::iter::once("default".to_owned())
            .chain(self.domains.keys().cloned())
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn languages() {
        assert_eq!(Lang::from_tag("de-CH"), Some(Lang::De));
        assert_eq!(Lang::from_tag("fr"), None);
        assert_eq!(
            Lang::from_accept_language("fr-FR,fr;q=0.9,en;q=0.8,de;q=0.7", Lang::De),
            Lang::En
        );
        assert_eq!(
            Lang::from_accept_language("de-DE,de;q=0.9", Lang::En),
            Lang::De
        );
        assert_eq!(Lang::from_accept_language("", Lang::De), Lang::De);
    }

    #[test]
    fn german_and_english_have_the_same_texts() {
        let de = read_flat_toml("de", EMBEDDED_TEXTS_DE).unwrap();
        let en = read_flat_toml("en", EMBEDDED_TEXTS_EN).unwrap();
        let dk: Vec<_> = de.keys().collect();
        let ek: Vec<_> = en.keys().collect();
        assert_eq!(dk, ek, "every text exists in both languages");
        for (k, v) in &de {
            assert!(!v.trim().is_empty(), "de {k} empty");
        }
    }

    /// Every `t.key` used by an embedded template exists in the texts.
    #[test]
    fn templates_use_only_existing_texts() {
        let de = read_flat_toml("de", EMBEDDED_TEXTS_DE).unwrap();
        for (name, src) in EMBEDDED_TEMPLATES {
            let mut rest = *src;
            while let Some(i) = rest.find("t.") {
                let before = rest[..i].chars().last();
                rest = &rest[i + 2..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let key: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if key.is_empty() {
                    continue;
                }
                assert!(
                    de.contains_key(&key),
                    "{name} uses t.{key}, which is not in de.toml"
                );
            }
        }
    }

    #[test]
    fn folder_overrides_fall_back_to_defaults() {
        let dir = std::env::temp_dir().join(format!("siegel-theme-{}", std::process::id()));
        let d = dir.join("example.com");
        std::fs::create_dir_all(d.join("templates")).unwrap();
        std::fs::write(
            d.join("texts.en.toml"),
            "brand = \"Example Bank Secure Mail\"\n",
        )
        .unwrap();
        std::fs::write(d.join("theme.toml"), "[colors]\nprimary = \"#123456\"\n").unwrap();
        std::fs::write(d.join("logo.png"), b"\x89PNG fake").unwrap();
        std::fs::write(
            d.join("templates/notice.html"),
            "<p>{{ t.brand }} {{ theme.colors.primary }} {{ theme.colors.accent }} {{ title }}</p>",
        )
        .unwrap();
        let themes = Themes::load(Some(&dir)).unwrap();
        let t = themes.for_domain("Example.COM");
        assert_eq!(t.name(), "example.com");
        assert_eq!(t.text(Lang::En, "brand"), "Example Bank Secure Mail");
        assert_ne!(
            t.text(Lang::De, "brand"),
            "Example Bank Secure Mail",
            "German keeps its default"
        );
        assert_eq!(t.logo().content_type, "image/png");
        let html = t
            .render(
                "notice.html",
                Lang::En,
                minijinja::context! { title => "<b>x</b>" },
            )
            .unwrap();
        assert!(html.contains("#123456"), "{html}");
        assert!(html.contains("&lt;b&gt;x&lt;"), "auto-escaped: {html}");
        assert!(
            !html.contains(" #123456 #123456"),
            "accent keeps its default: {html}"
        );
        // Another domain gets the defaults.
        let other = themes.for_domain("other.example");
        assert_eq!(other.name(), "default");
        assert!(other.has_template("login.html"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn broken_theme_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("siegel-theme-bad-{}", std::process::id()));
        let d = dir.join("example.com/templates");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("login.html"), "{% if %}").unwrap();
        let e = Themes::load(Some(&dir)).unwrap_err().to_string();
        assert!(e.contains("example.com/login.html"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
