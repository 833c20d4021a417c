//! Every form of the portal is `multipart/form-data` (the container file
//! posts that way, and replies carry files), read here into fields and
//! files within the body limit.

use std::collections::HashMap;

use axum::extract::Multipart;

/// An uploaded file.
pub struct Upload {
    /// The form field.
    pub field: String,
    /// The file name the browser gave (untrusted: only shown, never a path).
    pub name: String,
    /// The content type the browser gave (untrusted).
    pub content_type: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A read form.
#[derive(Default)]
pub struct Form {
    fields: HashMap<String, String>,
    /// Files, in order.
    pub files: Vec<Upload>,
}

/// Fields longer than this are refused, except the container.
const MAX_FIELD: usize = 1 << 20;

impl Form {
    /// Reads the whole form. `None` when it is not a readable multipart
    /// body (or exceeds the limit): the caller shows a clear page.
    pub async fn read(mut mp: Multipart) -> Option<Form> {
        let mut form = Form::default();
        while let Ok(Some(field)) = mp.next_field().await {
            let name = field.name().unwrap_or("").to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let content_type = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_owned();
            let bytes = field.bytes().await.ok()?;
            match file_name {
                Some(file) => {
                    if !file.is_empty() || !bytes.is_empty() {
                        form.files.push(Upload {
                            field: name,
                            name: file,
                            content_type,
                            bytes: bytes.to_vec(),
                        });
                    }
                }
                None => {
                    if name != "container" && bytes.len() > MAX_FIELD {
                        return None;
                    }
                    let text = String::from_utf8(bytes.to_vec()).ok()?;
                    form.fields.insert(name, text);
                }
            }
        }
        Some(form)
    }

    /// A field, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// A field, trimmed, empty when absent.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).map_or("", str::trim)
    }
}
