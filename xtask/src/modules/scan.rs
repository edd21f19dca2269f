//! A textual scan of one Rust source file: its `mod x;` declarations and the module paths
//! it names (`crate::…`, `super::…`, `self::…`). Comments, string and char literals and
//! attributes are skipped; `#[cfg(test)]` modules are skipped whole, as test code.

/// One token of the scan: enough of Rust's lexical grammar to find paths.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Where a path starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// `crate::…` (or `$crate::…` in a macro).
    Crate,
    /// `self::…` (0) or `super::…` (one per `super`), counted from the file's module.
    Up(usize),
}

/// A module path named in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRef {
    /// Where the path starts.
    pub base: Base,
    /// The segments after the base (modules first, then possibly an item).
    pub segments: Vec<String>,
    /// The 1-based line it is on.
    pub line: usize,
}

impl PathRef {
    /// The path as written, for reports (`super::super` folded into the count).
    pub fn display(&self) -> String {
        let base = match self.base {
            Base::Crate => "crate".to_owned(),
            Base::Up(0) => "self".to_owned(),
            Base::Up(n) => vec!["super"; n].join("::"),
        };
        std::iter::once(base)
            .chain(self.segments.iter().cloned())
            .collect::<Vec<_>>()
            .join("::")
    }
}

/// What one file declares and names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileScan {
    /// `mod x;` declared at file level, other than `#[cfg(test)]` ones.
    pub mods: Vec<String>,
    /// Every `crate::`/`super::`/`self::` path outside test modules.
    pub refs: Vec<PathRef>,
}

/// Scans one file's source text.
pub fn scan(source: &str) -> FileScan {
    Scanner {
        tokens: tokenize(source),
        pos: 0,
        out: FileScan::default(),
    }
    .run()
}

fn tokenize(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '/' if at(i + 1) == '/' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        line += usize::from(chars[i] == '\n');
                        i += 1;
                    }
                }
            }
            '"' => i = skip_string(&chars, i + 1, &mut line),
            '\'' => {
                // A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a, 'static).
                if at(i + 1) == '\\' {
                    // Past the quote, the backslash and the escaped character.
                    i += 3;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if at(i + 2) == '\'' {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let raw = matches!(word.as_str(), "r" | "br" | "cr");
                if raw && (at(i) == '"' || (at(i) == '#' && matches!(at(i + 1), '"' | '#'))) {
                    i = skip_raw_string(&chars, i, &mut line);
                } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                    i = skip_string(&chars, i + 1, &mut line);
                } else if word == "b" && at(i) == '\'' {
                    i += 1;
                    while i < chars.len() && chars[i] != '\'' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                } else if word == "r" && at(i) == '#' {
                    // A raw identifier (`r#type`): the word after `#` is the identifier.
                    i += 1;
                } else {
                    tokens.push(Token {
                        tok: Tok::Ident(word),
                        line,
                    });
                }
            }
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            ':' if at(i + 1) == ':' => {
                tokens.push(Token {
                    tok: Tok::PathSep,
                    line,
                });
                i += 2;
            }
            c => {
                tokens.push(Token {
                    tok: Tok::Punct(c),
                    line,
                });
                i += 1;
            }
        }
    }
    tokens
}

/// Skips a string body from just after its opening quote; returns the index after it.
fn skip_string(chars: &[char], mut i: usize, line: &mut usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                *line += usize::from(chars.get(i + 1) == Some(&'\n'));
                i += 2;
            }
            '"' => return i + 1,
            c => {
                *line += usize::from(c == '\n');
                i += 1;
            }
        }
    }
    i
}

/// Skips `#…#"…"#…#` from its first `#` or quote; returns the index after it.
fn skip_raw_string(chars: &[char], mut i: usize, line: &mut usize) -> usize {
    let mut hashes = 0;
    while chars.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    i += 1; // the opening quote
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        *line += usize::from(chars[i] == '\n');
        i += 1;
    }
    i
}

struct Scanner {
    tokens: Vec<Token>,
    pos: usize,
    out: FileScan,
}

impl Scanner {
    fn tok(&self, at: usize) -> Option<&Tok> {
        self.tokens.get(at).map(|t| &t.tok)
    }

    fn ident(&self, at: usize) -> Option<&str> {
        match self.tok(at) {
            Some(Tok::Ident(word)) => Some(word),
            _ => None,
        }
    }

    fn is_punct(&self, at: usize, c: char) -> bool {
        self.tok(at) == Some(&Tok::Punct(c))
    }

    fn line(&self, at: usize) -> usize {
        self.tokens.get(at).map_or(0, |t| t.line)
    }

    /// The index just after the group opened at `open` (`(`, `[` or `{`).
    fn after_group(&self, open: usize) -> usize {
        let mut depth = 0usize;
        let mut i = open;
        while let Some(tok) = self.tok(i) {
            match tok {
                Tok::Punct('(' | '[' | '{') => depth += 1,
                Tok::Punct(')' | ']' | '}') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    }

    fn run(mut self) -> FileScan {
        // Brace depths at which each enclosing inline `mod x {` opened.
        let mut inline: Vec<usize> = Vec::new();
        let mut depth = 0usize;
        let mut test_item = false;
        while self.pos < self.tokens.len() {
            let i = self.pos;
            // Attributes: skipped, but `#[cfg(test)]` marks the next item.
            if self.is_punct(i, '#') {
                let open = if self.is_punct(i + 1, '!') {
                    i + 2
                } else {
                    i + 1
                };
                if self.is_punct(open, '[') {
                    let end = self.after_group(open);
                    test_item |= self.is_cfg_test(open + 1, end.saturating_sub(1));
                    self.pos = end;
                    continue;
                }
            }
            if std::mem::take(&mut test_item)
                && let Some(name_at) = self.mod_after_visibility(i)
            {
                self.pos = if self.is_punct(name_at + 1, '{') {
                    self.after_group(name_at + 1)
                } else {
                    name_at + 2
                };
                continue;
            }
            match self.tok(i).cloned() {
                Some(Tok::Punct('{')) => {
                    depth += 1;
                    self.pos += 1;
                }
                Some(Tok::Punct('}')) => {
                    if inline.last() == Some(&depth) {
                        inline.pop();
                    }
                    depth = depth.saturating_sub(1);
                    self.pos += 1;
                }
                Some(Tok::Ident(word)) if word == "mod" => {
                    if let Some(name) = self.ident(i + 1).map(str::to_owned) {
                        if self.is_punct(i + 2, ';') && inline.is_empty() {
                            self.out.mods.push(name);
                        } else if self.is_punct(i + 2, '{') {
                            depth += 1;
                            inline.push(depth);
                            self.pos = i + 3;
                            continue;
                        }
                    }
                    self.pos += 1;
                }
                Some(Tok::Ident(word)) if word == "use" => {
                    let mut paths = Vec::new();
                    self.pos = self.use_tree(i + 1, Vec::new(), &mut paths);
                    let line = self.line(i);
                    for path in paths {
                        self.push(path, line, inline.len());
                    }
                }
                Some(Tok::Ident(word))
                    if matches!(word.as_str(), "crate" | "super" | "self")
                        && self.tok(i + 1) == Some(&Tok::PathSep)
                        && (i == 0 || self.tok(i - 1) != Some(&Tok::PathSep)) =>
                {
                    let mut path = vec![word];
                    let mut j = i + 1;
                    while self.tok(j) == Some(&Tok::PathSep) {
                        match self.ident(j + 1) {
                            Some(next) => path.push(next.to_owned()),
                            None => break,
                        }
                        j += 2;
                    }
                    let line = self.line(i);
                    self.push(path, line, inline.len());
                    self.pos = j;
                }
                _ => self.pos += 1,
            }
        }
        self.out
    }

    /// Whether the attribute tokens in `start..end` are `cfg(test)` or `cfg(all(test, …))`.
    fn is_cfg_test(&self, start: usize, end: usize) -> bool {
        let words: Vec<&Tok> = (start..end).filter_map(|k| self.tok(k)).collect();
        let ident = |k: usize, w: &str| matches!(words.get(k), Some(Tok::Ident(x)) if x == w);
        ident(0, "cfg")
            && (ident(2, "test") && words.len() == 4 || ident(2, "all") && ident(4, "test"))
    }

    /// If an item starting at `i` is `[pub[(…)]] mod name`, the index of `name`.
    fn mod_after_visibility(&self, i: usize) -> Option<usize> {
        let mut k = i;
        if self.ident(k) == Some("pub") {
            k += 1;
            if self.is_punct(k, '(') {
                k = self.after_group(k);
            }
        }
        (self.ident(k) == Some("mod") && self.ident(k + 1).is_some()).then_some(k + 1)
    }

    /// Parses a use tree from `i` with `prefix`, pushing each full path; returns the index
    /// after the tree (after the `;` at top level).
    fn use_tree(&self, mut i: usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
        let top = prefix.is_empty();
        // `impl Trait + use<'a>` captures lifetimes; it is not a use item.
        if top
            && !matches!(
                self.tok(i),
                Some(Tok::Ident(_) | Tok::PathSep | Tok::Punct('{'))
            )
        {
            return i;
        }
        if self.tok(i) == Some(&Tok::PathSep) {
            i += 1; // `use ::std::…`: an extern crate, never a module of this one
        }
        loop {
            match self.tok(i).cloned() {
                Some(Tok::Ident(word)) if word == "self" && !prefix.is_empty() => {
                    out.push(prefix.clone());
                    i += 1;
                }
                Some(Tok::Ident(word)) => {
                    prefix.push(word);
                    i += 1;
                    if self.tok(i) == Some(&Tok::PathSep) {
                        i += 1;
                        continue;
                    }
                    out.push(prefix.clone());
                }
                Some(Tok::Punct('{')) => {
                    i += 1;
                    while !self.is_punct(i, '}') && i < self.tokens.len() {
                        i = self.use_tree(i, prefix.clone(), out);
                        if self.is_punct(i, ',') {
                            i += 1;
                        }
                    }
                    i += 1;
                }
                Some(Tok::Punct('*')) => {
                    out.push(prefix.clone());
                    i += 1;
                }
                _ => {}
            }
            break;
        }
        // `as name`, then the end of this subtree.
        if self.ident(i) == Some("as") {
            i += 2;
        }
        if top {
            while i < self.tokens.len() && !self.is_punct(i, ';') {
                i += 1;
            }
            i += 1;
        }
        i
    }

    /// Records `path` (as written) if it starts at `crate`, `super` or `self`, seen
    /// inside `inline` inline modules of the file.
    fn push(&mut self, path: Vec<String>, line: usize, inline: usize) {
        let mut segments = path.into_iter().peekable();
        let base = match segments.peek().map(String::as_str) {
            Some("crate") => {
                segments.next();
                Base::Crate
            }
            Some("self") => {
                segments.next();
                Base::Up(0)
            }
            Some("super") => {
                let mut up = 0usize;
                while segments.peek().map(String::as_str) == Some("super") {
                    segments.next();
                    up += 1;
                }
                // Inline modules are not modules of the tree: their supers stay in the file.
                Base::Up(up.saturating_sub(inline))
            }
            _ => return,
        };
        self.out.refs.push(PathRef {
            base,
            segments: segments.collect(),
            line,
        });
    }
}
