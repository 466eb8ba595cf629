// The Vercel AI SDK (`ai` + `@ai-sdk/openai`): `generateText` with a tool
// takes several steps (a tool call, then the answer), and `totalUsage` adds
// up the usage of every step; then `streamText` streams an answer and its
// usage; then a next turn goes on from the first's messages (on the
// Responses API the SDK names the stored answer by id: `item_reference`). Reads OPENAI_BASE_URL and OPENAI_API_KEY, and OPENAI_MODEL_API:
// `chat` (the default) for `openai.chat(…)`, which speaks
// /v1/chat/completions, or `responses` for `openai(…)`, the provider's
// default, which speaks /v1/responses. Prints one JSON line of what it saw.

import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";

const openai = createOpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY });
const api = process.env.OPENAI_MODEL_API ?? "chat";
const model = api === "responses" ? openai("gpt-4o-mini") : openai.chat("gpt-4o-mini");

const calls = [];
const prompt = "What is the weather in Paris? [mock tokens=9]";
const result = await generateText({
  model,
  prompt,
  tools: {
    get_weather: tool({
      description: "The weather in a city",
      inputSchema: jsonSchema({
        type: "object",
        properties: { city: { type: "string" }, unit: { type: "string", enum: ["c", "f"] } },
        required: ["city"],
        additionalProperties: false,
      }),
      execute: async (input) => {
        calls.push(input);
        return { city: input.city, temperature: 21 };
      },
    }),
  },
  stopWhen: stepCountIs(5),
});

const fail = (message) => {
  console.error(message);
  process.exit(1);
};
if (result.steps.length < 2) fail(`expected at least 2 steps, got ${result.steps.length}`);
if (calls.length !== 1 || calls[0].city !== "mock") fail(`expected one tool call, got ${JSON.stringify(calls)}`);
if (result.finishReason !== "stop") fail(`expected the last step to stop, got ${result.finishReason}`);
if (result.text.split(/\s+/).length !== 9) fail(`expected 9 words, got ${JSON.stringify(result.text)}`);
const sum = (key) => result.steps.reduce((total, step) => total + step.usage[key], 0);
if (result.totalUsage.inputTokens !== sum("inputTokens")) fail("totalUsage.inputTokens is not the sum of the steps");
if (result.totalUsage.outputTokens !== sum("outputTokens")) fail("totalUsage.outputTokens is not the sum of the steps");

const streamed = streamText({ model, prompt: "Tell me about toll gates [mock tokens=7]" });
let text = "";
for await (const delta of streamed.textStream) text += delta;
const streamUsage = await streamed.usage;
if (text.split(/\s+/).length !== 7) fail(`expected 7 streamed words, got ${JSON.stringify(text)}`);
if (streamUsage.outputTokens !== 7) fail(`expected 7 output tokens streamed, got ${JSON.stringify(streamUsage)}`);

const next = await generateText({
  model,
  messages: [
    { role: "user", content: prompt },
    ...result.response.messages,
    { role: "user", content: "And tomorrow? [mock tokens=3]" },
  ],
});
if (next.text.split(/\s+/).length !== 3) fail(`expected 3 words next turn, got ${JSON.stringify(next.text)}`);

console.log(
  JSON.stringify({
    steps: result.steps.length,
    text: result.text,
    totalUsage: result.totalUsage,
    stepUsage: result.steps.map((s) => s.usage),
    streamUsage,
    nextUsage: next.usage,
  }),
);
