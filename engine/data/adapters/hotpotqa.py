"""HotpotQA (`hotpotqa/hotpot_qa`, configs `distractor` / `fullwiki`): {id, question, answer, type, level,
supporting_facts: {title, sent_id}, context: {title: [...], sentences: [[...], ...]}}.

The context paragraphs are assembled as `Title: sentence sentence ...`, separated by blank lines.
`supporting_only: true` keeps only the paragraphs that hold a supporting fact.
"""

from __future__ import annotations

from engine.data.adapters import need, record

DOMAIN = "qa"
ARGS = {"supporting_only": False}


def assemble_context(context: dict, keep_titles: set | None = None) -> str:
    """`Title: s1 s2 ...` per paragraph, blank line between paragraphs."""
    titles, sentences = context.get("title") or [], context.get("sentences") or []
    paragraphs = []
    for title, sents in zip(titles, sentences):
        if keep_titles is not None and title not in keep_titles:
            continue
        text = "".join(sents).strip()
        paragraphs.append(f"{title}: {text}" if title else text)
    return "\n\n".join(paragraphs)


def adapt(row: dict, *, index: int, args: dict) -> dict | None:
    facts = row.get("supporting_facts") or {}
    keep = set(facts.get("title") or []) if args["supporting_only"] else None
    context = need(row, "context")
    if isinstance(context, list):  # the original JSON release: [[title, [sentences]], ...]
        context = {"title": [c[0] for c in context], "sentences": [c[1] for c in context]}
    return record(id=str(need(row, "id")), question=need(row, "question").strip(),
                  context=assemble_context(context, keep), answers=[str(need(row, "answer")).strip()],
                  type=row.get("type"), level=row.get("level"), supporting_facts=facts or None)
