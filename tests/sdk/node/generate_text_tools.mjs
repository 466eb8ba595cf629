// The Vercel AI SDK (`ai` + `@ai-sdk/openai`): `generateText` with a tool
// takes several steps (a tool call, then the answer), and `totalUsage` adds
// up the usage of every step. Reads OPENAI_BASE_URL and OPENAI_API_KEY;
// prints one JSON line of what it saw.

import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, stepCountIs, tool } from "ai";

const openai = createOpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY });

const calls = [];
const result = await generateText({
  model: openai.chat("gpt-4o-mini"),
  prompt: "What is the weather in Paris? [mock tokens=9]",
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

console.log(
  JSON.stringify({
    steps: result.steps.length,
    text: result.text,
    totalUsage: result.totalUsage,
    stepUsage: result.steps.map((s) => s.usage),
  }),
);
