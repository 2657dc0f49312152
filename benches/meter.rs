//! Token meters and budgets on the request path: prompt estimation of a ~1 KiB chat body
//! (tiktoken and byte paths), budget reservation plus settlement (alone and contended by a
//! second thread), and the weighted GCRA check that admits a TPM reservation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use credentialflow::ai::tokens::estimate_chat_prompt_tokens;
use credentialflow::ai::tokens::warm_up;
use credentialflow::limits::{BudgetLimit, BudgetTable, Period};
use credentialflow::limits::{Gcra, LimiterTable};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

/// A chat body of about 1 KiB: a system prompt, three turns and a tool definition.
fn one_kib_chat() -> Value {
    let body = json!({
        "model": "gpt-4o",
        "max_tokens": 256,
        "messages": [
            {"role": "system", "content": "You are a concise assistant for an internal engineering team. Answer in plain English, cite the document section you rely on, and say so when you are unsure."},
            {"role": "user", "content": "Our gateway limits tokens per minute per key. How should it estimate the prompt size before the provider reports usage, and what happens when the estimate is wrong?"},
            {"role": "assistant", "content": "It counts the prompt with the model's tokenizer where one is known, reserves the requested completion cap, and corrects the reservation with the reported usage afterwards, refunding or charging the difference."},
            {"role": "user", "content": [
                {"type": "text", "text": "And for models whose tokenizer we do not ship? Also, is a picture counted?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/diagram.png", "detail": "low"}}
            ]}
        ],
        "tools": [{"type": "function", "function": {"name": "search_docs", "description": "Search the engineering handbook", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]
    });
    assert!((900..1_300).contains(&body.to_string().len()));
    body
}

fn estimate(c: &mut Criterion) {
    warm_up();
    let body = one_kib_chat();
    c.bench_function("tokens/chat prompt 1 KiB, tiktoken o200k (gpt-4o)", |b| {
        b.iter(|| black_box(estimate_chat_prompt_tokens(black_box("gpt-4o"), &body)))
    });
    c.bench_function("tokens/chat prompt 1 KiB, bytes/4 (claude)", |b| {
        b.iter(|| {
            black_box(estimate_chat_prompt_tokens(
                black_box("claude-sonnet-4-5"),
                &body,
            ))
        })
    });
}

/// A monthly budget in both tokens and money: the most work per request.
fn budget_limit() -> BudgetLimit {
    BudgetLimit {
        tokens: Some(u64::MAX / 2),
        nano_usd: Some(u64::MAX / 2),
        period: Period::Month,
    }
}

/// A monthly money-only budget (`budget_usd`), the usual configuration.
fn money_only_limit() -> BudgetLimit {
    BudgetLimit {
        tokens: None,
        ..budget_limit()
    }
}

/// 2026-03-15T12:00:00Z
const NOW_MS: i64 = 1_773_576_000_000;

fn budget(c: &mut Criterion) {
    let table = BudgetTable::new();
    let limit = budget_limit();
    for i in 0..1_000 {
        table.seed(&format!("key:{i:08}"), Period::Month, NOW_MS, 0, 0);
    }
    c.bench_function("budget/try_reserve+settle, tokens+money, one thread", |b| {
        b.iter(|| {
            let r = table
                .try_reserve(black_box("key:00000500"), &limit, NOW_MS, 1_280, 9_000)
                .unwrap();
            table.settle(r, NOW_MS, 1_100, 8_000);
        })
    });
    let money_only = money_only_limit();
    c.bench_function("budget/try_reserve+settle, money only, one thread", |b| {
        b.iter(|| {
            let r = table
                .try_reserve(black_box("key:00000501"), &money_only, NOW_MS, 1_280, 9_000)
                .unwrap();
            table.settle(r, NOW_MS, 1_100, 8_000);
        })
    });
    c.bench_function(
        "budget/try_reserve+settle, tokens+money, contended by a second thread",
        |b| {
            b.iter_custom(|iters| {
                let table = Arc::new(BudgetTable::new());
                let stop = Arc::new(AtomicBool::new(false));
                let rival = {
                    let (table, stop) = (Arc::clone(&table), Arc::clone(&stop));
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            let r = table
                                .try_reserve("team:hot", &limit, NOW_MS, 1_280, 9_000)
                                .unwrap();
                            table.settle(r, NOW_MS, 1_100, 8_000);
                        }
                    })
                };
                let start = Instant::now();
                for _ in 0..iters {
                    let r = table
                        .try_reserve(black_box("team:hot"), &limit, NOW_MS, 1_280, 9_000)
                        .unwrap();
                    table.settle(r, NOW_MS, 1_100, 8_000);
                }
                let elapsed = start.elapsed();
                stop.store(true, Ordering::Relaxed);
                rival.join().unwrap();
                elapsed
            })
        },
    );
}

fn weighted_gcra(c: &mut Criterion) {
    // 1e9 tokens per second: a 1 000-token check every simulated microsecond always fits.
    let gcra = Gcra::per_second(1_000_000_000, 0).unwrap();
    let state = AtomicU64::new(0);
    let mut now = 0u64;
    c.bench_function("tpm/gcra check_n 1000 tokens, admitted", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(gcra.check_n(black_box(&state), now, 1_000))
        })
    });
    let table: LimiterTable<String> = LimiterTable::new(100_000);
    for i in 0..10_000 {
        table.check_n(format!("key_{i:08}").as_str(), &gcra, 0, 1);
    }
    let mut now = 0u64;
    c.bench_function("tpm/table check_n+adjust by key id, 10k keys", |b| {
        b.iter(|| {
            now += 1_000;
            let d = table.check_n(black_box("key_00005000"), &gcra, now, 1_000);
            table.adjust("key_00005000", &gcra, now, -200);
            black_box(d)
        })
    });
}

criterion_group!(benches, estimate, budget, weighted_gcra);
criterion_main!(benches);
