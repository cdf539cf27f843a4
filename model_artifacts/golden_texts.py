"""The texts whose reference embeddings are stored as golden vectors.

A fixed, varied set: single words, questions, sentences, passages longer than the
model's 256-token window (truncation), non-English scripts and emoji. ``build.py``
embeds them with the PyTorch reference; the tests compare the ONNX encoder to it.
"""

from __future__ import annotations

SHORT = [
    "ok", "hi", "a", "?", "no", "yes", "cat", "Paris", "42", "AWS Lambda",
    "embeddings", "vector search", "cold start", "hello world", "thanks!",
]

SENTENCES = [
    "How do I reset my password?",
    "The quick brown fox jumps over the lazy dog.",
    "Serverless functions scale to zero when nobody calls them.",
    "What is the capital of Australia?",
    "A vector database stores embeddings and answers nearest-neighbour queries.",
    "Mean pooling averages the token embeddings weighted by the attention mask.",
    "Provisioned concurrency keeps Lambda execution environments initialised.",
    "She sold seashells by the seashore on a windy afternoon.",
    "Which river flows through Vienna, Budapest and Belgrade?",
    "The invoice was paid two weeks after the due date.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Can you recommend a good book about the history of mathematics?",
    "The train to Edinburgh departs from platform nine at half past six.",
    "Rate limits protect the service from bursts of traffic.",
    "My laptop battery drains quickly when the screen brightness is high.",
    "Quantized models trade a little accuracy for a lot of speed.",
    "The museum is closed on Mondays and public holidays.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "Who wrote the novel Pride and Prejudice?",
    "Add two cups of flour and stir until the batter is smooth.",
    "The stock market fell sharply after the announcement.",
    "HNSW graphs give logarithmic search time in practice.",
    "Please send me the quarterly report by Friday.",
    "The referee blew the whistle and the match was over.",
    "Error 503 means the service is temporarily unavailable.",
    "Jupiter is the largest planet in our solar system.",
    "I left my umbrella on the bus this morning.",
    "The patient was advised to drink plenty of fluids and rest.",
    "Use a token bucket to allow short bursts above the average rate.",
    "The orchestra tuned their instruments before the concert began.",
    "DNA carries the genetic instructions of living organisms.",
    "Our team shipped the new release a day ahead of schedule.",
    "The hikers reached the summit just before sunset.",
    "Is it safe to eat raw cookie dough?",
    "Encryption at rest protects data stored on disk.",
    "The library lends e-books as well as printed ones.",
    "Tidal forces from the moon cause the oceans to rise and fall.",
    "He practised the piano for three hours every day.",
    "Cosine similarity measures the angle between two vectors.",
    "The bakery on the corner sells the best croissants in town.",
]

NON_ENGLISH = [
    "Wie spät ist es?",
    "Der Zug hat heute zwanzig Minuten Verspätung.",
    "Où se trouve la gare la plus proche ?",
    "Je voudrais réserver une table pour deux personnes ce soir.",
    "¿Cuál es la mejor manera de aprender un idioma nuevo?",
    "El gato duerme en el sofá toda la tarde.",
    "Il tempo oggi è bellissimo, andiamo al mare.",
    "O céu está muito azul hoje.",
    "Het regent al de hele week in Amsterdam.",
    "Jag gillar att läsa böcker på kvällen.",
    "Dziękuję bardzo za pomoc.",
    "Привет, как дела?",
    "Москва — столица России.",
    "Καλημέρα, τι κάνεις;",
    "今日はとても暑いですね。",
    "東京は日本の首都です。",
    "我喜欢在周末去公园散步。",
    "北京是中国的首都。",
    "안녕하세요, 만나서 반갑습니다.",
    "مرحبا، كيف حالك؟",
    "שלום עולם",
    "नमस्ते, आप कैसे हैं?",
    "สวัสดีครับ",
    "Merhaba, nasılsın?",
    "Xin chào, bạn khỏe không?",
]

EMOJI_AND_SYMBOLS = [
    "🙂", "🚀🚀🚀", "I love pizza 🍕 and coffee ☕", "👍 looks good to me",
    "Deploy succeeded ✅", "Build failed ❌ — see logs", "🔥 hot take: tabs > spaces",
    "email: someone@example.com", "https://example.com/path?q=1&r=2",
    "C++ vs. Rust: which is faster?", "f(x) = x² + 2x + 1", "£100 ≈ €115 ≈ $125",
    "#hashtag @mention", "    padded with spaces    ", "UPPER CASE SHOUTING",
]

_PASSAGE_SEED = (
    "Retrieval augmented generation combines a search system with a language model. "
    "A user's question is embedded into a vector, the nearest documents are fetched "
    "from an index, and those documents are placed in the prompt so that the model can "
    "answer from evidence instead of from memory alone. The quality of the answer "
    "depends on the quality of the retrieval: if the right passage is not among the "
    "top results, no amount of prompting will recover it. "
)

PASSAGES = [
    _PASSAGE_SEED,
    _PASSAGE_SEED * 2,
    _PASSAGE_SEED * 4,  # well past 256 tokens: exercises truncation
    (
        "The Danube is Europe's second-longest river after the Volga. It rises in the "
        "Black Forest of Germany and flows for about 2,850 kilometres through ten "
        "countries before draining into the Black Sea. Four capital cities lie on its "
        "banks: Vienna, Bratislava, Budapest and Belgrade. For centuries it served as a "
        "frontier of the Roman Empire and later as a trade route linking central Europe "
        "with the east."
    ),
    (
        "Amazon API Gateway is a managed service for creating, publishing and securing "
        "APIs at any scale. A REST API can authorise callers with a Lambda authorizer, "
        "meter them with usage plans and API keys, and throttle them per key with a rate "
        "and a burst. Access logs and X-Ray tracing show what each request did."
    ),
    " ".join(["token"] * 600),
    " ".join(f"word{i}" for i in range(400)),
    "lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30,
]

GOLDEN_TEXTS: list[str] = SHORT + SENTENCES + NON_ENGLISH + EMOJI_AND_SYMBOLS + PASSAGES
