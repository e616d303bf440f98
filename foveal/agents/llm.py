"""A small client for any OpenAI-compatible chat endpoint (``POST {url}/chat/completions``), over httpx.

Configured by :class:`LLMConfig` or the environment: ``FOVEAL_LLM_URL`` (e.g. ``http://localhost:8080/v1``),
``FOVEAL_LLM_MODEL``, ``FOVEAL_LLM_API_KEY`` (optional), ``FOVEAL_LLM_TIMEOUT`` (seconds, default 60).
Timeouts, connection errors, 429 and 5xx replies are retried with backoff; other errors raise :class:`LLMError`.

Example::

    >>> client = ChatClient(LLMConfig(url="http://localhost:8080/v1", model="qwen2.5-7b"))   # doctest: +SKIP
    >>> client.complete([{"role": "user", "content": "Say hi"}])                             # doctest: +SKIP
    'Hi!'
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import httpx

from foveal.errors import ConfigError, FovealError


class LLMError(FovealError):
    """The chat endpoint failed or answered something unusable."""

    status_code = 502


@dataclass(frozen=True, slots=True)
class LLMConfig:
    url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    retries: int = 2
    temperature: float = 0.0

    @classmethod
    def from_env(cls) -> "LLMConfig":
        url = os.environ.get("FOVEAL_LLM_URL")
        model = os.environ.get("FOVEAL_LLM_MODEL")
        if not url or not model:
            raise ConfigError("the llm planner needs FOVEAL_LLM_URL and FOVEAL_LLM_MODEL (an OpenAI-compatible endpoint)")
        try:
            timeout = float(os.environ.get("FOVEAL_LLM_TIMEOUT", "60"))
        except ValueError:
            raise ConfigError("FOVEAL_LLM_TIMEOUT must be a number of seconds") from None
        return cls(url=url, model=model, api_key=os.environ.get("FOVEAL_LLM_API_KEY") or None, timeout=timeout)


class ChatClient:
    def __init__(self, config: LLMConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        headers = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.Client(base_url=config.url.rstrip("/") + "/", headers=headers,
                                  timeout=config.timeout, transport=transport)

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant's reply text to ``messages``."""
        body = {"model": self.config.model, "messages": messages, "temperature": self.config.temperature,
                "stream": False}
        last: Exception | None = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(min(4.0, 0.25 * 2**attempt))
            try:
                response = self._http.post("chat/completions", json=body)
            except httpx.HTTPError as exc:  # timeouts and connection errors
                last = exc
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = LLMError(f"chat endpoint answered {response.status_code}", body=response.text[:500])
                continue
            if response.status_code >= 400:
                raise LLMError(f"chat endpoint answered {response.status_code}", body=response.text[:500])
            try:
                content = response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise LLMError("chat endpoint reply has no choices[0].message.content", body=response.text[:500])
            if not isinstance(content, str):
                raise LLMError("chat endpoint reply content is not text")
            return content
        raise LLMError(f"chat endpoint failed after {self.config.retries + 1} attempts: {last}")

    def close(self) -> None:
        self._http.close()
