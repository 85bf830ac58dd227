"""One call through the official `openai` package, as a service would make it, against
`base_url`; prints what it got as one JSON line. Used by tests/proxy.rs.

    python3 openai_call.py BASE_URL chat|chat_stream [MAX_RETRIES]
"""
import json
import sys

import openai


def main() -> None:
    base_url, kind = sys.argv[1], sys.argv[2]
    retries = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    client = openai.OpenAI(base_url=base_url, api_key="sk-sdk-test", max_retries=retries)
    messages = [{"role": "user", "content": "hi"}]
    out = {"sdk": openai.__version__}
    try:
        if kind == "chat_stream":
            text = ""
            for chunk in client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
            out.update(result="ok", text=text)
        else:
            r = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            out.update(result="ok", text=r.choices[0].message.content)
    except openai.APIError as e:
        out.update(
            result="raised",
            exception=type(e).__name__,
            status=getattr(e, "status_code", None),
            code=e.code,
            type=e.type,
            message=e.message,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
