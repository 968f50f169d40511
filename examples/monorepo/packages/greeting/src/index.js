export function greeting(name) {
  return `Greetings from the HiveSync workspace package, ${name}!`;
}
