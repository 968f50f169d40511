import React, { useState } from 'react';
import leftPad from 'left-pad';
import { SafeAreaView, StyleSheet, Text } from 'react-native';
import { Counter } from './components/Counter';
import { Logo } from './components/Logo';

export default function App() {
  const [taps, setTaps] = useState(0);
  return (
    <SafeAreaView style={styles.container}>
      <Logo />
      <Text style={styles.title}>HiveSync yarn berry preview</Text>
      <Text style={styles.build}>Build {leftPad('7', 3, '0')}</Text>
      <Counter value={taps} onPress={() => setTaps(taps + 1)} />
    </SafeAreaView>
  );
}

const styles = StyleSheet.create({
  container: { flex: 1, alignItems: 'center', justifyContent: 'center', backgroundColor: '#fffbea' },
  title: { fontSize: 22, fontWeight: '600', marginVertical: 12 },
  build: { fontSize: 14, color: '#555', marginBottom: 8 },
});
